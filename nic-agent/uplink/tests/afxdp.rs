//! AF_XDP uplink against the real kernel: a veth pair whose far end lives in a network
//! namespace (`afxdp-*`), an `XdpPort` on the near end and a packet socket on the far end as
//! the peer. Frames cross both ways with their content checked, on one and on two queues,
//! 100 000 each way with every one accounted for; the error paths name the fix; the XDP
//! program is gone once the last socket is, even after a killed holder.
//!
//! Needs root (CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF), `ip`, `ethtool` and `setpriv`, and
//! Debian's libxdp (deploy/dev/setup-debian.sh); fails saying so otherwise.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use knic_uplink::{PacketSocketPort, UplinkError, XdpConfig, XdpMode, XdpPort, open_xdp_uplinks};
use packet_ring::{GuestOffloads, PacketBatch, PacketPort, PacketSink, PacketSource, VirtioNetHdr};
use test_support::{in_netns, poll_readable, require_root, require_tool, run};

/// Source MACs tell our frames from the kernel's own chatter: peer -> port, port -> peer.
const PEER_MAC: [u8; 6] = [0x02, 0xaf, 0, 0, 0, 0x01];
const PORT_MAC: [u8; 6] = [0x02, 0xaf, 0, 0, 0, 0x02];
/// Frame: Ethernet header, IPv4/UDP header (so flows hash apart), sequence number, filler.
const FRAME_LEN: usize = 14 + 20 + 8 + 8 + 64;

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

/// A veth pair `host` <-> `peer`, the peer end inside namespace `ns`; removed on drop.
struct Veth {
    ns: String,
    host: String,
    peer: String,
}

impl Veth {
    fn new(tag: &str) -> Self {
        require_root();
        require_tool("ethtool");
        let id = std::process::id() % 100_000;
        let v = Self {
            ns: format!("afxdp-{tag}-{id}"),
            host: format!("afx{tag}{id}"),
            peer: format!("afy{tag}{id}"),
        };
        let _ = Command::new("ip").args(["netns", "del", &v.ns]).output();
        let _ = Command::new("ip").args(["link", "del", &v.host]).output();
        ip(&["netns", "add", &v.ns]);
        ip(&[
            "link", "add", &v.host, "type", "veth", "peer", "name", &v.peer,
        ]);
        ip(&["link", "set", &v.peer, "netns", &v.ns]);
        // No IPv6 on either end: the kernels' own router solicitations and MLD reports
        // would reach the sockets under test at any time and make "nothing waits" false.
        std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", v.host),
            "1",
        )
        .unwrap();
        run(Command::new("ip")
            .args(["netns", "exec", &v.ns, "sysctl", "-qw"])
            .arg(format!("net.ipv6.conf.{}.disable_ipv6=1", v.peer)));
        for (dev, ns) in [(&v.host, None), (&v.peer, Some(&v.ns))] {
            let mut pre: Vec<&str> = ns.map(|n| vec!["-n", n.as_str()]).unwrap_or_default();
            pre.extend(["link", "set", "dev", dev.as_str(), "up"]);
            ip(&pre);
        }
        v
    }

    /// Gives both ends `n` receive and transmit queues.
    fn set_queues(&self, n: usize) {
        let n = n.to_string();
        let args = ["-L", "", "rx", &n, "tx", &n];
        let mut a = args;
        a[1] = &self.host;
        run(Command::new("ethtool").args(a));
        a[1] = &self.peer;
        run(Command::new("ip")
            .args(["netns", "exec", &self.ns, "ethtool"])
            .args(a));
    }

    /// A packet socket on the peer end, opened inside the namespace.
    fn peer_socket(&self) -> PacketSocketPort {
        let out = run(Command::new("ip").args(["-n", &self.ns, "-o", "link", "show", &self.peer]));
        let text = String::from_utf8_lossy(&out.stdout);
        let ifindex: i32 = text.split(':').next().unwrap().trim().parse().unwrap();
        in_netns(&self.ns, move || {
            PacketSocketPort::open(ifindex, None).unwrap()
        })
    }

    /// Whether the host end has an XDP program attached (any mode).
    fn has_xdp(&self) -> bool {
        let out = run(Command::new("ip").args(["-d", "link", "show", "dev", &self.host]));
        String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
    }

    fn open(&self, queues: usize) -> Vec<XdpPort> {
        open_xdp_uplinks(&self.host, queues, &XdpConfig::default()).unwrap()
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// Frame `seq` from `src`: flow (UDP source port) `seq % flows`, payload derived from `seq`.
fn frame(src: [u8; 6], seq: u64, flows: u64) -> Vec<u8> {
    let mut f = Vec::with_capacity(FRAME_LEN);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&src);
    // IPv4 so the kernel's flow hash spreads flows over queues; nothing listens.
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (FRAME_LEN - 14) as u16;
    let mut iph = [
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 1, 17, 0, 0, 10, 98, 0, 1, 10, 98, 0, 2,
    ];
    iph[2..4].copy_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&iph);
    let sport = 1000 + (seq % flows) as u16;
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&9u16.to_be_bytes());
    f.extend_from_slice(&((FRAME_LEN - 34) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend((0..64).map(|i| (seq as u8).wrapping_mul(31).wrapping_add(i)));
    f
}

/// Checks `f` is exactly frame `seq` of `src` with any flow count (the flow only changes
/// the source port).
fn check(src: [u8; 6], f: &[u8]) -> Option<u64> {
    if f.get(6..12) != Some(&src[..]) || f.len() != FRAME_LEN {
        return None;
    }
    let seq = u64::from_be_bytes(f[42..50].try_into().unwrap());
    let mut want = frame(src, seq, u64::MAX);
    want[34..36].copy_from_slice(&f[34..36]);
    assert_eq!(f, want.as_slice(), "frame {seq} arrived altered");
    Some(seq)
}

/// Sends frames `seqs` through `tx` in batches of up to 64 and collects ours from every
/// receiver in `rxs` until all arrived (or 5 s without progress). Sends at most `window`
/// ahead of what arrived, so no ring or socket buffer overflows. Returns the count per
/// receiver; panics on a duplicate or a frame never sent.
fn transfer(
    tx: &mut dyn PacketSink,
    rxs: &mut [&mut dyn PacketSource],
    src: [u8; 6],
    total: u64,
    flows: u64,
    window: u64,
) -> Vec<u64> {
    let mut out = PacketBatch::new(64, 2048);
    let mut inb = PacketBatch::new(64, 4096);
    let mut seen = HashSet::with_capacity(total as usize);
    let mut per_rx = vec![0u64; rxs.len()];
    let mut next = 0u64;
    let mut last_progress = Instant::now();
    while (seen.len() as u64) < total {
        if next < total && next < seen.len() as u64 + window {
            out.clear();
            while next < total && !out.is_full() && next < seen.len() as u64 + window {
                assert!(out.push(VirtioNetHdr::default(), &frame(src, next, flows)));
                next += 1;
            }
            let n = out.len() as u64;
            let sent = tx.send(&out).unwrap() as u64;
            // A refused packet is resent: roll back to the first one not taken.
            next -= n - sent;
        }
        let mut got_any = false;
        for (i, rx) in rxs.iter_mut().enumerate() {
            inb.clear();
            rx.recv(&mut inb).unwrap();
            for p in inb.packets() {
                if let Some(seq) = check(src, p.frame()) {
                    assert!(seq < next, "frame {seq} was never sent");
                    assert!(seen.insert(seq), "frame {seq} arrived twice");
                    per_rx[i] += 1;
                    got_any = true;
                }
            }
        }
        if got_any {
            last_progress = Instant::now();
        } else {
            assert!(
                last_progress.elapsed() < Duration::from_secs(5),
                "stalled: {} of {total} arrived ({next} sent)",
                seen.len()
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    per_rx
}

#[test]
fn afxdp_frames_cross_both_ways_in_copy_mode() {
    let v = Veth::new("a");
    let mut peer = v.peer_socket();
    let mut ports = v.open(1);
    let port = &mut ports[0];
    assert!(v.has_xdp(), "the redirect program is attached");
    let b = port.binding();
    assert!(!b.zero_copy, "veth cannot do zero-copy");
    assert_eq!(b.mode, XdpMode::Native, "veth has native XDP");
    assert_eq!(
        port.tx_offloads(),
        GuestOffloads::default(),
        "no offloads over AF_XDP"
    );

    let got = transfer(&mut peer, &mut [port], PEER_MAC, 256, 8, 64);
    assert_eq!(got, [256]);
    let got = transfer(port, &mut [&mut peer], PORT_MAC, 256, 8, 64);
    assert_eq!(got, [256]);
    drop(ports);
    assert!(!v.has_xdp(), "the program is detached with the last socket");
}

/// Two queues: flows spread over both sockets (the peer's transmit queue picks the host
/// end's receive queue), none lost or duplicated; each socket sends on its own queue.
#[test]
fn afxdp_two_queues_each_get_their_flows() {
    let v = Veth::new("q");
    v.set_queues(2);
    let mut peer = v.peer_socket();
    let mut ports = v.open(2);
    let (a, b) = ports.split_at_mut(1);
    let (q0, q1) = (&mut a[0], &mut b[0]);
    let got = transfer(&mut peer, &mut [q0, q1], PEER_MAC, 4096, 64, 256);
    assert_eq!(got.iter().sum::<u64>(), 4096);
    assert!(
        got.iter().all(|&n| n > 0),
        "64 flows over 2 queues: {got:?}"
    );
    for q in [&mut a[0], &mut b[0]] {
        assert_eq!(
            transfer(q, &mut [&mut peer], PORT_MAC, 1024, 8, 256),
            [1024]
        );
    }
}

/// 100 000 frames each way through one queue, windowed so nothing overflows: every frame
/// arrives once, intact, and the kernel reports no drop on the socket.
#[test]
fn afxdp_hundred_thousand_frames_each_way() {
    let v = Veth::new("v");
    let mut peer = v.peer_socket();
    let mut ports = v.open(1);
    let port = &mut ports[0];
    let start = Instant::now();
    assert_eq!(
        transfer(&mut peer, &mut [&mut *port], PEER_MAC, 100_000, 16, 1024),
        [100_000]
    );
    let rx_time = start.elapsed();
    let start = Instant::now();
    assert_eq!(
        transfer(&mut *port, &mut [&mut peer], PORT_MAC, 100_000, 16, 1024),
        [100_000]
    );
    let tx_time = start.elapsed();
    assert_eq!(port.kernel_drops(), 0);
    let st = port.stats();
    assert_eq!(st.rx_bad_desc.load(std::sync::atomic::Ordering::Relaxed), 0);
    eprintln!(
        "100k frames of {FRAME_LEN} B: peer->xdp {:.0} kpps, xdp->peer {:.0} kpps",
        100.0 / rx_time.as_secs_f64(),
        100.0 / tx_time.as_secs_f64()
    );
}

/// Asking for more queue pairs than the interface has queues names the `ethtool` fix.
#[test]
fn afxdp_too_few_queues_says_ethtool() {
    let v = Veth::new("n");
    let e = open_xdp_uplinks(&v.host, 2, &XdpConfig::default()).unwrap_err();
    assert!(
        matches!(
            e,
            UplinkError::NotEnoughQueues {
                have: 1,
                need: 2,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains(&format!("ethtool -L {} combined 2", v.host)),
        "{e}"
    );
    assert!(!v.has_xdp(), "nothing attached on failure");
}

/// A foreign XDP program on the interface (loaded by `ip`, not libxdp's dispatcher) makes the
/// open fail with the command that removes it, and stays untouched.
#[test]
fn afxdp_foreign_program_is_busy_and_left_alone() {
    let v = Veth::new("b");
    let obj = "/usr/lib/x86_64-linux-gnu/bpf/xdpfilt_alw_all.o";
    assert!(
        std::path::Path::new(obj).exists(),
        "{obj} missing: run deploy/dev/setup-debian.sh"
    );
    ip(&[
        "link", "set", "dev", &v.host, "xdp", "obj", obj, "sec", "xdp",
    ]);
    let e = open_xdp_uplinks(&v.host, 1, &XdpConfig::default()).unwrap_err();
    assert!(matches!(e, UplinkError::XdpProgramBusy { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains(&format!("ip link set dev {} xdp off", v.host)),
        "{e}"
    );
    assert!(v.has_xdp(), "the foreign program stays");
    ip(&["link", "set", "dev", &v.host, "xdp", "off"]);
    assert!(!v.has_xdp());
    v.open(1);
}

/// A device without native XDP (a namespace's loopback): native mode is refused as
/// unsupported, and the automatic mode falls back to generic XDP and works. Everything runs
/// inside the namespace, where the device is: libxdp finds the program by ifindex there.
#[test]
fn afxdp_no_native_xdp_falls_back_or_says_so() {
    let v = Veth::new("l");
    let (native, auto) = in_netns(&v.ns, || {
        let native = XdpConfig {
            mode: XdpMode::Native,
            ..XdpConfig::default()
        };
        let e = open_xdp_uplinks("lo", 1, &native).unwrap_err();
        let auto = open_xdp_uplinks("lo", 1, &XdpConfig::default()).unwrap();
        let binding = auto[0].binding();
        drop(auto);
        (e, binding)
    });
    assert!(
        matches!(
            native,
            UplinkError::NoXdpSupport {
                mode: XdpMode::Native,
                ..
            }
        ),
        "{native:?}"
    );
    assert!(native.to_string().contains("generic XDP"), "{native}");
    assert_eq!(auto.mode, XdpMode::Generic);
    assert!(!auto.zero_copy);
    let out = run(Command::new("ip").args(["-n", &v.ns, "-d", "link", "show", "lo"]));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("prog/xdp"),
        "detached on drop"
    );
}

/// Child side of the two tests below, selected by environment: opens the uplink named in
/// `AFXDP_CHILD_OPEN` and prints the outcome; with `AFXDP_CHILD_HOLD` keeps it open.
#[test]
fn afxdp_child_helper() {
    let Ok(name) = std::env::var("AFXDP_CHILD_OPEN") else {
        return;
    };
    match open_xdp_uplinks(&name, 1, &XdpConfig::default()) {
        Ok(ports) => {
            println!("AFXDP-OPEN-OK");
            if std::env::var_os("AFXDP_CHILD_HOLD").is_some() {
                std::thread::sleep(Duration::from_secs(60));
            }
            drop(ports);
        }
        Err(e) => println!("AFXDP-OPEN-ERR {e}"),
    }
}

fn child(name: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        "afxdp_child_helper",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("AFXDP_CHILD_OPEN", name);
    c
}

/// Without privilege (uid nobody, no capabilities) the open says to run as root.
#[test]
fn afxdp_without_privilege_says_run_as_root() {
    let v = Veth::new("p");
    require_tool("setpriv");
    let exe = std::env::current_exe().unwrap();
    let out = run(Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(exe)
        .args([
            "--exact",
            "afxdp_child_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("AFXDP_CHILD_OPEN", &v.host));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("AFXDP-OPEN-ERR") && text.contains("run as root"),
        "{text}"
    );
    assert!(!v.has_xdp());
}

/// A holder killed with SIGKILL leaves the program attached; the next open reuses it,
/// frames flow, and its drop detaches it.
#[test]
fn afxdp_program_left_by_a_killed_process_is_reused_then_detached() {
    let v = Veth::new("k");
    let mut holder = child(&v.host)
        .env("AFXDP_CHILD_HOLD", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The child says when its socket is up (the test harness prints a line before).
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(holder.stdout.take().unwrap()));
    assert!(
        lines.any(|l| l.is_ok_and(|l| l.contains("AFXDP-OPEN-OK"))),
        "the child did not open the uplink"
    );
    assert!(v.has_xdp());
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(v.has_xdp(), "SIGKILL leaves the program attached");

    let mut peer = v.peer_socket();
    let mut ports = v.open(1);
    assert_eq!(
        transfer(&mut peer, &mut [&mut ports[0]], PEER_MAC, 128, 4, 64),
        [128]
    );
    drop(ports);
    assert!(
        !v.has_xdp(),
        "the reused program is detached with our last socket"
    );
}

/// Our frames from `src` waiting on `rx` now (drained, content checked).
fn drain(rx: &mut dyn PacketSource, src: [u8; 6]) -> u64 {
    let mut inb = PacketBatch::new(64, 4096);
    let mut n = 0;
    loop {
        inb.clear();
        if rx.recv(&mut inb).unwrap() == 0 {
            return n;
        }
        n += inb
            .packets()
            .iter()
            .filter(|p| check(src, p.frame()).is_some())
            .count() as u64;
    }
}

/// 2048 frames of 64 flows from the peer; how many reached each pair.
fn spread(
    peer: &mut PacketSocketPort,
    q0: &mut dyn PacketPort,
    q1: &mut dyn PacketPort,
) -> Vec<u64> {
    transfer(peer, &mut [q0, q1], PEER_MAC, 2048, 64, 256)
}

/// AF_PACKET with two queue pairs: their receiving sockets share a fanout group, and only
/// attached pairs are in it. With pair 1 detached every flow reaches pair 0; attached again,
/// pair 1 gets its share (on the same ready fd). Nothing a pair sends comes back to either.
#[test]
fn afxdp_packet_fanout_hashes_only_to_attached_pairs() {
    let v = Veth::new("f");
    let mut peer = v.peer_socket();
    let mut ports =
        knic_uplink::open_uplinks(&knic_uplink::UplinkSpec::Packet(v.host.clone()), 2).unwrap();
    let (a, b) = ports.split_at_mut(1);
    let (q0, q1) = (a[0].as_mut(), b[0].as_mut());
    let ready1 = q1.ready_fd();

    // Both start detached: nothing is steered to either.
    let mut burst = PacketBatch::new(16, 2048);
    for i in 0..16 {
        assert!(burst.push(VirtioNetHdr::default(), &frame(PEER_MAC, i, 16)));
    }
    assert_eq!(peer.send(&burst).unwrap(), 16);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(drain(&mut *q0, PEER_MAC) + drain(&mut *q1, PEER_MAC), 0);
    q0.set_attached(true).unwrap();
    q1.set_attached(true).unwrap();
    let got = spread(&mut peer, q0, q1);
    assert_eq!(got.iter().sum::<u64>(), 2048);
    assert!(
        got.iter().all(|&n| n > 0),
        "64 flows over 2 attached pairs: {got:?}"
    );

    q1.set_attached(false).unwrap();
    let got = spread(&mut peer, q0, q1);
    assert_eq!(got, [2048, 0], "every flow reaches the attached pair");

    q1.set_attached(true).unwrap();
    assert_eq!(q1.ready_fd(), ready1, "the ready fd survives a re-join");
    // ... and still signals: with pair 0 out, frames for the re-joined socket make it
    // readable.
    q0.set_attached(false).unwrap();
    assert!(!poll_readable(ready1, 0), "nothing waits yet");
    assert_eq!(peer.send(&burst).unwrap(), 16);
    assert!(
        poll_readable(ready1, 2000),
        "the ready fd signals the new socket's frames"
    );
    // Readable on the first frame: the rest of the burst may still be on its way.
    let mut got = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while got < 16 && std::time::Instant::now() < deadline {
        got += drain(&mut *q1, PEER_MAC);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(got, 16);
    q0.set_attached(true).unwrap();
    let got = spread(&mut peer, q0, q1);
    assert_eq!(got.iter().sum::<u64>(), 2048);
    assert!(got[1] > 0, "a re-attached pair gets flows again: {got:?}");

    // Sending: the peer sees every frame, neither pair its own.
    assert_eq!(
        transfer(&mut *q0, &mut [&mut peer], PORT_MAC, 512, 8, 128),
        [512]
    );
    assert_eq!(
        transfer(&mut *q1, &mut [&mut peer], PORT_MAC, 512, 8, 128),
        [512]
    );
    assert_eq!(drain(&mut *q0, PORT_MAC) + drain(&mut *q1, PORT_MAC), 0);
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// AF_XDP carries no virtio-net header, so the port finishes what a device would: a frame
/// with a partial checksum leaves with a correct one; a GSO frame is refused and counted.
#[test]
fn afxdp_tx_completes_partial_checksums_and_refuses_gso() {
    let v = Veth::new("c");
    let mut peer = v.peer_socket();
    let mut ports = v.open(1);
    let port = &mut ports[0];

    // Frame 7 as a UDP datagram whose checksum field holds only the pseudo-header sum.
    let mut f = frame(PORT_MAC, 7, 1);
    let udp_len = (FRAME_LEN - 34) as u32;
    let pseudo = fold(0x0a62 + 0x0001 + 0x0a62 + 0x0002 + 17 + udp_len);
    f[40..42].copy_from_slice(&pseudo.to_be_bytes());
    let partial = VirtioNetHdr {
        flags: VirtioNetHdr::F_NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 6,
        ..VirtioNetHdr::default()
    };
    let gso = VirtioNetHdr {
        gso_type: VirtioNetHdr::GSO_UDP_L4,
        gso_size: 32,
        hdr_len: 42,
        ..partial
    };
    let mut batch = PacketBatch::new(2, 2048);
    assert!(batch.push(gso, &f));
    assert!(batch.push(partial, &f));
    assert_eq!(port.send(&batch).unwrap(), 1, "the GSO frame is refused");
    assert_eq!(
        port.stats()
            .tx_gso_refused
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    let mut inb = PacketBatch::new(16, 4096);
    let start = Instant::now();
    let got = loop {
        inb.clear();
        peer.recv(&mut inb).unwrap();
        if let Some(p) = inb
            .packets()
            .iter()
            .find(|p| p.frame().get(6..12) == Some(&PORT_MAC[..]))
        {
            break p.frame().to_vec();
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the checksummed frame never arrived"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(got.len(), FRAME_LEN);
    assert_ne!(
        got[40..42],
        pseudo.to_be_bytes(),
        "the checksum was filled in"
    );
    let mut sum = u32::from(pseudo);
    for c in got[34..].chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]));
    }
    assert_eq!(fold(sum), 0xffff, "a receiver's UDP checksum check passes");
    assert_eq!(got[42..], f[42..], "payload intact");
}
