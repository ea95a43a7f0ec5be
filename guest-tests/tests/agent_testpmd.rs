//! knic-agent with DPDK testpmd (`net_virtio_user`, icmpecho) as the guest: a peer behind
//! the agent's AF_PACKET uplink pings the guest through the library kernel's routing, with
//! the copies per frame counted; and the frontend attaches and detaches 100 times while the
//! agent's fds, threads, RSS and the library's interface list stay where they started; and a
//! hostile frontend on a second port (the catalogue of bad TX chains, `guest_tests::hostile`)
//! costs only that port. Needs root, `ip`, `busybox` (ping), `stdbuf` and `dpdk-testpmd`
//! (`deploy/dev/setup-debian.sh`), and the workspace's binaries built
//! (`cargo build --release -p knic-agent`).

use std::time::Duration;

use guest_tests::agent::{
    COPIES_PER_FRAME, KnicAgent, LEAK_WARMUP, RSS_SLACK_KIB, Topology, UplinkKind, guest_ip,
};
use guest_tests::hostile::attack_port;
use guest_tests::{Scratch, Testpmd, require_root, serial};

/// Cycles of the reattach test.
const REATTACH: usize = 100;

#[test]
fn peer_pings_testpmd_through_the_library_with_one_copy_each_way() {
    let _one = serial();
    require_root();
    let topo = Topology::new("agtp");
    let dir = Scratch::new("agent-tp");
    let agent = KnicAgent::start(
        &topo.agent_ns,
        &dir.0,
        &Topology::agent_args(UplinkKind::Packet, &dir.0, 1, ""),
    );
    let mut tp = Testpmd::start(&dir.0.join("vm1.sock"), "icmpecho", &dir.0);
    tp.wait_started();
    agent.wait_guest("vm1", true, Duration::from_secs(20));
    let port = agent.port("vm1");
    assert_eq!(port["ifname"], "eth1", "{port}");

    // peer -> kgb == kga (AF_PACKET) -> library eth0 -> routed -> eth1 -> vhost worker (one copy) ->
    // testpmd, and the echo back the same way.
    topo.peer_ping(&guest_ip(1), 20);

    let st = agent.port_stats("vm1");
    for dir in ["to_stack", "to_guest"] {
        let c = &st["copies"][dir];
        assert!(c["frames"].as_u64().unwrap_or(0) >= 21, "{dir}: {st}");
        // One copy each way, the vhost worker's: straight into the kernel's RX buffers
        // (DirectRx), and straight out of its TX buffers (DirectTx). The seam carries
        // nothing either way.
        let want = COPIES_PER_FRAME as f64;
        assert_eq!(c["per_frame"].as_f64(), Some(want), "{dir}: {st}");
        assert_eq!(st["seam"][dir]["copies"], 0, "{dir}: {st}");
        assert_eq!(
            st["seam"][dir]["taken"], 0,
            "{dir}: the seam carried frames: {st}"
        );
    }
    let up = &agent.ctl(&["stats"])["uplinks"][0]["library"];
    assert!(up["rx_packets"].as_u64().unwrap_or(0) >= 20, "{up}");
    assert!(up["tx_packets"].as_u64().unwrap_or(0) >= 20, "{up}");
    let pmd = tp.stop();
    assert!(pmd.rx_packets >= 21 && pmd.tx_packets >= 21, "{pmd:?}");
    agent.wait_guest("vm1", false, Duration::from_secs(20));
}

#[test]
fn testpmd_attaches_and_detaches_100_times_without_leaks() {
    let _one = serial();
    require_root();
    let topo = Topology::new("agrt");
    let dir = Scratch::new("agent-rt");
    let agent = KnicAgent::start(
        &topo.agent_ns,
        &dir.0,
        &Topology::agent_args(UplinkKind::Packet, &dir.0, 1, ""),
    );
    let socket = dir.0.join("vm1.sock");
    let cycle = |i: usize| {
        let mut tp = Testpmd::start(&socket, "icmpecho", &dir.0);
        tp.wait_started();
        agent.wait_guest("vm1", true, Duration::from_secs(20));
        if i % 25 == 0 {
            // Traffic now and then, so the data path (not only the handshake) is cycled.
            topo.peer_ping(&guest_ip(1), 2);
        }
        tp.stop();
        agent.wait_guest("vm1", false, Duration::from_secs(20));
    };
    for i in 0..LEAK_WARMUP {
        cycle(i);
    }
    let links = agent.library_links();
    let start = agent.resources();
    let t0 = std::time::Instant::now();
    for i in 0..REATTACH {
        cycle(i);
    }
    let end = agent.resources();
    eprintln!(
        "{REATTACH} attach/detach cycles in {:.1} s; start {start:?}, end {end:?}",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(agent.library_links(), links, "the library's interfaces");
    end.assert_back_to(&start, RSS_SLACK_KIB, "the agent");
    // And the port still works after all that.
    let mut tp = Testpmd::start(&socket, "icmpecho", &dir.0);
    tp.wait_started();
    agent.wait_guest("vm1", true, Duration::from_secs(20));
    topo.peer_ping(&guest_ip(1), 3);
    tp.stop();
}

/// A hostile frontend on port vm2 posts the catalogue of bad TX chains while the peer pings
/// testpmd on vm1 through the library: vm2 counts each chain under its reason, vm1 loses
/// nothing and counts no drop, the agent stays up, and vm2 serves again afterwards.
#[test]
fn a_hostile_frontend_on_one_port_costs_only_that_port() {
    let _one = serial();
    require_root();
    let topo = Topology::new("agho");
    let dir = Scratch::new("agent-hostile");
    let mut agent = KnicAgent::start(
        &topo.agent_ns,
        &dir.0,
        &Topology::agent_args(UplinkKind::Packet, &dir.0, 2, ""),
    );
    let mut tp = Testpmd::start(&dir.0.join("vm1.sock"), "icmpecho", &dir.0);
    tp.wait_started();
    agent.wait_guest("vm1", true, Duration::from_secs(20));
    topo.peer_ping(&guest_ip(1), 3);

    // Pings run through vm1 while vm2 is attacked.
    let mut pinger = topo.peer_ns.cmd("busybox");
    pinger.args([
        "ping",
        "-c",
        "40",
        "-i",
        "0.1",
        "-W",
        "5",
        "-w",
        "30",
        &guest_ip(1),
    ]);
    let pings = pinger
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run ping");
    let drops = attack_port(&mut agent, "vm2", &dir.0.join("vm2.sock"));
    eprintln!("vm2 drops: {drops}");
    let out = pings.wait_with_output().expect("ping");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("40 packets received"),
        "vm1 lost pings while vm2 was attacked:\n{text}"
    );
    let vm1 = agent.port_stats("vm1");
    let vm1_drops: u64 = vm1["vhost"][0]["drops"]
        .as_object()
        .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
        .unwrap_or(u64::MAX);
    assert_eq!(vm1_drops, 0, "vm1 counted drops: {vm1}");
    // The port that was attacked serves the next frontend.
    agent.wait_guest("vm2", false, Duration::from_secs(20));
    let drops = attack_port(&mut agent, "vm2", &dir.0.join("vm2.sock"));
    eprintln!("vm2 drops, second frontend: {drops}");
    topo.peer_ping(&guest_ip(1), 3);
    tp.stop();
}
