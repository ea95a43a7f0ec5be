//! A library network device on AF_PACKET: eth0's backend is knic's AF_PACKET uplink
//! port (PACKET_VNET_HDR) bound to one end of a veth pair; the other end lives in a
//! namespace this test creates, where host `ping` and a Python TCP peer run.
//! Needs root, iproute2, iputils-ping and python3 (deploy/dev/setup-debian.sh).

#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a failed unwrap is a failed test

mod common;

use std::io::Read;
use std::thread;

use common::{Netns, run};
use knic_uplink::PacketSocketPort;
use lkl_netstack::{
    BootConfig, DevicePort, Kernel, NetBackend, NetDeviceConfig, Offloads, TcpListener,
};

#[test]
fn af_packet_device_answers_ping_and_receives_tcp() {
    let id = std::process::id() % 100_000;
    let ns = Netns(format!("knic-afp-{id}"));
    let (near, far) = (format!("kpa{id}"), format!("kpb{id}"));
    run(&format!("ip netns add {}", ns.0));
    run(&format!("ip link add {near} type veth peer name {far}"));
    run(&format!("ip link set {far} netns {}", ns.0));
    run(&format!("ip link set {near} up"));
    run(&format!(
        "ip -n {0} link set lo up && ip -n {0} addr add 10.232.0.1/24 dev {far} && ip -n {0} link set {far} up",
        ns.0
    ));

    let ifindex: i32 = std::fs::read_to_string(format!("/sys/class/net/{near}/ifindex"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let port = PacketSocketPort::open(ifindex, None).unwrap();
    let port = DevicePort::new(port);
    let kernel = Kernel::boot(&BootConfig {
        net_devices: vec![NetDeviceConfig {
            backend: NetBackend::Port(port),
            mac: [0x52, 0x54, 0x00, 0x6b, 0x6e, 0x03],
            mtu: 1500,
            // The host's TCP over veth leaves checksums partial (NEEDS_CSUM in the
            // vnet header): the kernel's device must accept that (GUEST_CSUM).
            offloads: Offloads::Tso,
            queue_pairs: 1,
        }],
        ..BootConfig::default()
    })
    .unwrap();
    kernel.set_link_up("eth0", true).unwrap();
    kernel
        .add_address("eth0", "10.232.0.2".parse().unwrap(), 24)
        .unwrap();

    run(&format!(
        "ip netns exec {} ping -c 3 -i 0.2 -W 2 10.232.0.2",
        ns.0
    ));

    let listener = TcpListener::bind(&kernel, "10.232.0.2:5003".parse().unwrap()).unwrap();
    const BYTES: usize = 8 << 20;
    thread::scope(|s| {
        let receiver = s.spawn(|| {
            let (mut conn, peer) = listener.accept().unwrap();
            assert_eq!(peer.ip().to_string(), "10.232.0.1");
            let mut got = Vec::new();
            conn.read_to_end(&mut got).unwrap();
            got
        });
        run(&format!(
            "ip netns exec {} /usr/bin/python3 -c \"import socket\n\
             s = socket.create_connection(('10.232.0.2', 5003), timeout=20); s.sendall(bytes(i % 251 for i in range({BYTES}))); s.close()\"",
            ns.0
        ));
        let got = receiver.join().unwrap();
        assert_eq!(got.len(), BYTES);
        assert!(
            got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8),
            "content differs"
        );
    });
    let stats = kernel.net_device_stats(0).unwrap();
    println!("eth0 over AF_PACKET: {stats:?}");
    kernel.halt().unwrap();
    let _ = std::process::Command::new("ip")
        .args(["link", "delete", &near])
        .status();
}
