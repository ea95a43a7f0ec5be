//! A four-pair virtio-net device on a multi-queue TAP: the kernel's driver negotiates
//! VIRTIO_NET_F_MQ, `Kernel::set_queue_pairs` turns the pairs on over the control
//! queue, and many TCP flows from a namespace spread over the pairs (the host's TAP
//! hashes each flow to a queue, each pair's receive thread reads its own).
//! Needs root, iproute2 and python3.

mod common;

use std::io::Read;
use std::thread;

use common::{Netns, run};
use lkl_netstack::{Offloads, TcpListener};

const PAIRS: u16 = 4;
const FLOWS: usize = 16;
const FLOW_BYTES: usize = 1 << 20;
const HOST: &str = "10.233.0.1";
const LIB: &str = "10.233.0.2";
const F_CTRL_VQ: u64 = 1 << 17;
const F_MQ: u64 = 1 << 22;

#[test]
fn flows_spread_over_queue_pairs() {
    let id = std::process::id() % 100_000;
    let ns = Netns(format!("knic-mq-{id}"));
    let tap = format!("knq{id}");
    let kernel = common::boot_on_tap(&ns, &tap, Offloads::Tso, PAIRS, HOST);
    let before = kernel.net_device_stats(0).unwrap();
    assert_eq!(
        before.negotiated_features & (F_MQ | F_CTRL_VQ),
        F_MQ | F_CTRL_VQ
    );
    assert_eq!(
        before.active_queue_pairs, 1,
        "one pair per CPU until told otherwise"
    );
    kernel.set_link_up("eth0", true).unwrap();
    kernel
        .add_address("eth0", LIB.parse().unwrap(), 24)
        .unwrap();
    // With one pair enabled the TAP's other queues are detached: the host steers every
    // frame to pair 0 (a frame hashed to a pair nobody serves would be lost).
    run(&format!(
        "ip netns exec {} ping -c 3 -i 0.2 -W 2 {LIB}",
        ns.0
    ));
    let one = kernel.net_device_stats(0).unwrap();
    assert!(one.queue_pairs[0].rx_packets > 0);
    assert!(
        one.queue_pairs[1..]
            .iter()
            .all(|q| q.rx_packets == 0 && q.tx_packets == 0),
        "disabled pairs carry nothing: {one:?}"
    );

    kernel.set_queue_pairs("eth0", u32::from(PAIRS)).unwrap();
    assert_eq!(
        kernel.net_device_stats(0).unwrap().active_queue_pairs,
        PAIRS
    );
    assert!(
        kernel
            .set_queue_pairs("eth0", u32::from(PAIRS) + 1)
            .is_err(),
        "more pairs than max_virtqueue_pairs is refused"
    );
    run(&format!(
        "ip netns exec {} ping -c 2 -i 0.2 -W 2 {LIB}",
        ns.0
    ));

    // FLOWS connections from the namespace, each with its own source port.
    let listener = TcpListener::bind(&kernel, format!("{LIB}:5004").parse().unwrap()).unwrap();
    thread::scope(|s| {
        let receiver = s.spawn(|| {
            let mut conns = Vec::new();
            for _ in 0..FLOWS {
                conns.push(listener.accept().unwrap().0);
            }
            thread::scope(|s| {
                let readers: Vec<_> = conns
                    .iter_mut()
                    .map(|c| {
                        s.spawn(move || {
                            let mut got = Vec::new();
                            c.read_to_end(&mut got).unwrap();
                            got.len()
                        })
                    })
                    .collect();
                readers
                    .into_iter()
                    .map(|r| r.join().unwrap())
                    .collect::<Vec<_>>()
            })
        });
        run(&format!(
            "ip netns exec {} /usr/bin/python3 -c \"import socket, threading\n\
             def flow():\n    s = socket.create_connection(('{LIB}', 5004), timeout=20); s.sendall(bytes({FLOW_BYTES})); s.close()\n\
             ts = [threading.Thread(target=flow) for _ in range({FLOWS})]\n\
             [t.start() for t in ts]; [t.join() for t in ts]\"",
            ns.0
        ));
        assert_eq!(receiver.join().unwrap(), vec![FLOW_BYTES; FLOWS]);
    });

    let stats = kernel.net_device_stats(0).unwrap();
    for (i, q) in stats.queue_pairs.iter().enumerate() {
        println!(
            "pair {i}: rx {} frames, tx {} frames, rx kicks {}, tx kicks {}, interrupts {} (+{} suppressed)",
            q.rx_packets,
            q.tx_packets,
            q.rx_kicks,
            q.tx_kicks,
            q.interrupts,
            q.interrupts_suppressed
        );
    }
    let rx_pairs = stats
        .queue_pairs
        .iter()
        .filter(|q| q.rx_packets > 0)
        .count();
    assert!(
        rx_pairs >= 2,
        "flows reached {rx_pairs} of {PAIRS} pairs: {stats:?}"
    );
    let t = &stats.total;
    assert_eq!(t.rx_dropped() + t.tx_dropped(), 0, "no drops: {t:?}");
    kernel.halt().unwrap();
}
