//! Network devices removed while traffic flows through them, both ways: the removal
//! returns promptly, nothing crashes, the kernel stays up, and a device added after
//! it carries traffic. Needs root (TAP, netns), iproute2 and ping.
#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a failed unwrap is a failed test; results are reported on stdout

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::frames::{KERNEL_IP, PEER_IP, arp, icmp_echo, kernel_device, ping};
use common::{Netns, connect_tap, kernel_complaints, run, wait_for_carrier};
use lkl_netstack::{
    BootConfig, DevicePort, Kernel, NetBackend, NetDeviceConfig, TapConfig, UdpSocket,
};
use packet_ring::{VirtioNetHdr, memory_port_pair};

const ROUNDS: usize = 10;
/// A removal under load that takes longer than this counts as a hang.
const REMOVAL_DEADLINE: Duration = Duration::from_secs(10);

/// Removes `index` on another thread and fails the test if it does not return in time.
fn remove_within_deadline(kernel: &Arc<Kernel>, index: usize) -> Duration {
    let (done, finished) = mpsc::channel();
    let k = Arc::clone(kernel);
    let started = Instant::now();
    let remover = thread::spawn(move || {
        let result = k.remove_net_device(index);
        let _ = done.send(result.map_err(|e| e.to_string()));
    });
    match finished.recv_timeout(REMOVAL_DEADLINE) {
        Ok(result) => result.unwrap(),
        Err(_) => panic!("removing device {index} under traffic hangs"),
    }
    remover.join().unwrap();
    started.elapsed()
}

/// A library UDP socket that sends to `peer` as fast as it can until told to stop,
/// counting its sends in `sent`; errors (the route goes with the interface) are
/// counted, not fatal. Returns the number of sends refused.
fn udp_flood(
    kernel: &Kernel,
    peer: Ipv4Addr,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> thread::JoinHandle<u64> {
    let socket = UdpSocket::bind(kernel, "0.0.0.0:0".parse().unwrap()).unwrap();
    thread::spawn(move || {
        let to = SocketAddr::from((peer, 9));
        let payload = [0x6bu8; 1000];
        let mut failed = 0;
        while !stop.load(Ordering::Relaxed) {
            match socket.send_to(&payload, to) {
                Ok(_) => {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    failed += 1;
                    thread::sleep(Duration::from_micros(200));
                }
            }
        }
        failed
    })
}

/// Waits until `flowing` says traffic flows both ways, or fails the test.
fn wait_for_traffic(what: &str, flowing: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !flowing() {
        assert!(Instant::now() < deadline, "no traffic: {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn devices_removed_under_traffic() {
    let kernel = Arc::new(Kernel::boot(&BootConfig::default()).unwrap());

    // A packet port: the peer floods echo requests in and the kernel floods UDP out
    // while the device goes.
    for round in 0..ROUNDS {
        let (port, mut peer) = memory_port_pair(256, 2048).unwrap();
        let (index, name) = kernel
            .add_net_device(&kernel_device(NetBackend::Port(DevicePort::new(port))))
            .unwrap();
        kernel.set_link_up(&name, true).unwrap();
        kernel
            .add_address(&name, Ipv4Addr::from(KERNEL_IP).into(), 24)
            .unwrap();
        wait_for_carrier(&kernel, &name, true);
        arp(&mut peer); // the kernel learns the peer's MAC, so its UDP goes out
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let (peer_stop, peer_received) = (Arc::clone(&stop), Arc::clone(&received));
        let peer_thread = thread::spawn(move || {
            let request = icmp_echo(0x4b4e, 7, &[0x5a; 512]);
            while !peer_stop.load(Ordering::Relaxed) {
                for _ in 0..32 {
                    if !peer.send(VirtioNetHdr::default(), &request).unwrap() {
                        break;
                    }
                }
                let n = peer.recv_with(256, |_| {});
                peer_received.fetch_add(n as u64, Ordering::Relaxed);
                thread::yield_now();
            }
        });
        let sent = Arc::new(AtomicU64::new(0));
        let sender = udp_flood(
            &kernel,
            PEER_IP.into(),
            Arc::clone(&stop),
            Arc::clone(&sent),
        );
        // Remove the device once frames flow both ways.
        wait_for_traffic("echo replies and UDP to the peer", || {
            received.load(Ordering::Relaxed) >= 1000 && sent.load(Ordering::Relaxed) >= 100
        });
        let before = kernel.net_device_stats(index).unwrap();
        let took = remove_within_deadline(&kernel, index);
        stop.store(true, Ordering::Relaxed);
        peer_thread.join().unwrap();
        let failed = sender.join().unwrap();
        let sent = sent.load(Ordering::Relaxed);
        println!(
            "packet port round {round}: removed in {took:?} with {} frames in and {} out so \
             far; UDP sends {sent} ok, {failed} refused",
            before.total.rx_packets, before.total.tx_packets
        );
        assert!(!kernel.links().unwrap().iter().any(|l| l.name == name));
    }

    // A TAP: a namespace floods pings at the kernel while the device goes.
    let id = std::process::id() % 100_000;
    let tap = format!("knrt-{id}");
    let ns = Netns(format!("kremove-t-{id}"));
    run(&format!("ip netns add {}", ns.0));
    for round in 0..ROUNDS {
        let (index, name) = kernel
            .add_net_device(&kernel_device(NetBackend::Tap(TapConfig {
                name: tap.clone(),
            })))
            .unwrap();
        connect_tap(&kernel, &name, &tap, &ns, 237);
        let mut flood = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.0,
                "ping",
                "-f",
                "-q",
                "-w",
                "20",
                "10.237.0.2",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let sender = udp_flood(
            &kernel,
            Ipv4Addr::new(10, 237, 0, 1),
            Arc::clone(&stop),
            Arc::clone(&sent),
        );
        wait_for_traffic("the namespace's flood in and UDP out", || {
            kernel.net_device_stats(index).unwrap().total.rx_packets >= 1000
                && sent.load(Ordering::Relaxed) >= 100
        });
        let before = kernel.net_device_stats(index).unwrap();
        let took = remove_within_deadline(&kernel, index);
        stop.store(true, Ordering::Relaxed);
        let failed = sender.join().unwrap();
        let sent = sent.load(Ordering::Relaxed);
        // The TAP went with the device, so the flood ends on its own; make sure.
        let _ = flood.kill();
        flood.wait().unwrap();
        println!(
            "TAP round {round}: removed in {took:?} with {} frames in and {} out so far; \
             UDP sends {sent} ok, {failed} refused",
            before.total.rx_packets, before.total.tx_packets
        );
        assert!(!kernel.links().unwrap().iter().any(|l| l.name == name));
    }

    // The kernel is unharmed: a new device answers at once; this one has two queue
    // pairs and a control queue, which go with it too.
    let (port, mut peer) = memory_port_pair(256, 2048).unwrap();
    let (second, _second_peer) = memory_port_pair(256, 2048).unwrap();
    let (index, name) = kernel
        .add_net_device(&NetDeviceConfig {
            queue_pairs: 2,
            ..kernel_device(NetBackend::Port(DevicePort::per_queue_pair(vec![
                Box::new(port),
                Box::new(second),
            ])))
        })
        .unwrap();
    kernel.set_link_up(&name, true).unwrap();
    kernel
        .add_address(&name, Ipv4Addr::from(KERNEL_IP).into(), 24)
        .unwrap();
    wait_for_carrier(&kernel, &name, true);
    arp(&mut peer);
    ping(&mut peer, 1, b"after the storm");
    remove_within_deadline(&kernel, index);
    assert!(!kernel.links().unwrap().iter().any(|l| l.name == name));
    let complaints = kernel_complaints(&kernel);
    assert!(
        complaints.is_empty(),
        "the kernel complained: {complaints:#?}"
    );
    kernel.halt().unwrap();
}
