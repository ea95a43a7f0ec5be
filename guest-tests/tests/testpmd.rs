//! knic-vhost with DPDK testpmd (`net_virtio_user`) as the guest, inside a network namespace
//! these tests create. Every scenario runs over every uplink kind: a TAP device, and AF_PACKET
//! or AF_XDP (copy mode) on one end of a veth pair. Needs root, `ip`, `busybox` (ping), `stdbuf` and
//! `dpdk-testpmd`: run `deploy/dev/setup-debian.sh` first.
//!
//!   cargo test -p guest-tests --test testpmd -- --test-threads=1

use std::time::Duration;

use guest_tests::{
    KnicVhost, NetNs, Scratch, Testpmd, require_root, require_tool, run, serial, wait_for,
    workspace_bin,
};

/// Packets each bulk test must move.
const BULK: u64 = 1_000_000;
const GUEST_MAC: &str = "52:54:00:12:34:56";

/// How knic-vhost reaches the namespace's network.
#[derive(Debug, Clone, Copy)]
enum Uplink {
    /// TAP `kvtap0`; the host side is the TAP itself.
    Tap,
    /// veth `kva` (knic-vhost's AF_PACKET socket) <-> `kvb` (the host side).
    Veth,
    /// The same veth, with knic-vhost's AF_XDP socket on `kva`.
    Xdp,
}

impl Uplink {
    fn spec(self) -> &'static str {
        match self {
            Self::Tap => "tap:kvtap0",
            Self::Veth => "packet:kva",
            Self::Xdp => "xdp:kva",
        }
    }

    /// The interface the namespace's own stack uses to talk to the guest.
    fn host_if(self) -> &'static str {
        match self {
            Self::Tap => "kvtap0",
            Self::Veth | Self::Xdp => "kvb",
        }
    }

    /// The interface knic-vhost's packets enter and leave the kernel through.
    fn knic_if(self) -> &'static str {
        match self {
            Self::Tap => "kvtap0",
            Self::Veth | Self::Xdp => "kva",
        }
    }

    /// Creates what must exist before knic-vhost starts.
    fn before_start(self, ns: &NetNs) {
        if let Self::Veth | Self::Xdp = self {
            run(ns
                .cmd("ip")
                .args(["link", "add", "kva", "type", "veth", "peer", "name", "kvb"]));
            run(ns.cmd("ip").args(["link", "set", "kva", "up"]));
        }
    }

    /// Addresses and brings up the host side once knic-vhost runs.
    fn after_start(self, ns: &NetNs) {
        let host = self.host_if();
        for ifname in [self.knic_if(), host] {
            // Keep IPv6 chatter (router solicitations, MLD) off the counters.
            let _ = ns
                .cmd("sysctl")
                .args(["-qw", &format!("net.ipv6.conf.{ifname}.disable_ipv6=1")])
                .output();
        }
        run(ns
            .cmd("ip")
            .args(["addr", "add", "10.77.0.1/24", "dev", host]));
        run(ns.cmd("ip").args(["link", "set", host, "up"]));
    }
}

struct Rig {
    // Field order is drop order: stop knic-vhost before deleting the namespace.
    kv: KnicVhost,
    ns: NetNs,
    dir: Scratch,
}

fn rig(tag: &str, uplink: Uplink) -> Rig {
    require_root();
    for tool in ["ip", "busybox", "dpdk-testpmd", "kill", "stdbuf"] {
        require_tool(tool);
    }
    let ns = NetNs::new(tag);
    let dir = Scratch::new(tag);
    uplink.before_start(&ns);
    let kv = KnicVhost::start(&ns, uplink.spec(), &dir.0);
    uplink.after_start(&ns);
    Rig { kv, ns, dir }
}

fn u(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("counter {k} missing in {v}"))
}

fn icmpecho(uplink: Uplink) {
    let r = rig("echo", uplink);
    let mut tp = Testpmd::start(&r.kv.socket, "icmpecho", &r.dir.0);
    tp.wait_started();
    let out =
        r.ns.cmd("busybox")
            .args(["ping", "-c", "5", "-w", "15", "10.77.0.2"])
            .output()
            .expect("run ping");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("5 packets received"),
        "{uplink:?}: ping through knic-vhost to testpmd icmpecho failed:\n{text}\n{}\ntestpmd:\n{}",
        String::from_utf8_lossy(&out.stderr),
        tp.log_text()
    );
    let st = r.kv.stats();
    // The guest received the ARP request and 5 echo requests and sent their replies.
    assert!(u(&st, "rx_packets") >= 6, "{st}");
    assert!(u(&st, "tx_packets") >= 6, "{st}");
    assert_eq!(KnicVhost::total_drops(&st), 0, "{st}");
    tp.stop();
}

#[test]
fn icmpecho_answers_ping_through_tap() {
    let _one = serial();
    icmpecho(Uplink::Tap);
}

#[test]
fn icmpecho_answers_ping_through_af_packet() {
    let _one = serial();
    icmpecho(Uplink::Veth);
}

fn txonly(uplink: Uplink) {
    let r = rig("tx", uplink);
    let kif = uplink.knic_if();
    // What leaves knic-vhost is counted by the kernel as TAP rx, or veth tx (+ tx_dropped
    // when the veth peer's backlog is full: a kernel-side drop, after the device).
    let (ctr, extra) = match uplink {
        Uplink::Tap => ("rx_packets", None),
        Uplink::Veth | Uplink::Xdp => ("tx_packets", Some("tx_dropped")),
    };
    let kernel_count = |ns: &NetNs| ns.if_stat(kif, ctr) + extra.map_or(0, |e| ns.if_stat(kif, e));
    let before = kernel_count(&r.ns);
    let mut tp = Testpmd::start(&r.kv.socket, "txonly", &r.dir.0);
    tp.wait_started();
    wait_for("a million guest packets", Duration::from_secs(180), || {
        u(&r.kv.stats(), "tx_packets") >= BULK
    });
    let pmd = tp.stop();
    // testpmd counts a packet once it is on the ring; the device's worker may still be
    // publishing the counters of its last batch (up to a ring's worth) when testpmd exits.
    // Wait for them (bounded) rather than read a moment too early; a lost packet still fails.
    let settled = std::time::Instant::now() + Duration::from_secs(5);
    while u(&r.kv.stats(), "tx_packets") < pmd.tx_packets && std::time::Instant::now() < settled {
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = r.kv.stats();
    let dev_tx = u(&st, "tx_packets");
    // Every packet testpmd put on the ring was taken by the device, and none was dropped
    // (testpmd's TX-dropped counts packets it could not enqueue on a full ring: they never
    // reached the device).
    assert_eq!(
        pmd.tx_packets, dev_tx,
        "{uplink:?}: testpmd {pmd:?} vs device {st}"
    );
    assert!(dev_tx >= BULK);
    assert_eq!(KnicVhost::total_drops(&st), 0, "{st}");
    wait_for(
        "the kernel to count every packet",
        Duration::from_secs(10),
        || kernel_count(&r.ns) - before >= dev_tx,
    );
    eprintln!("txonly {uplink:?}: device took {dev_tx}; testpmd {pmd:?}");
}

#[test]
fn icmpecho_answers_ping_through_af_xdp() {
    let _one = serial();
    icmpecho(Uplink::Xdp);
}

#[test]
fn txonly_moves_a_million_packets_to_the_tap_without_drops() {
    let _one = serial();
    txonly(Uplink::Tap);
}

#[test]
fn txonly_moves_a_million_packets_to_af_packet_without_drops() {
    let _one = serial();
    txonly(Uplink::Veth);
}

#[test]
fn txonly_moves_a_million_packets_to_af_xdp_without_drops() {
    let _one = serial();
    txonly(Uplink::Xdp);
}

/// rxonly: frames sent from the namespace reach the guest. Every packet is followed: what the
/// kernel handed towards the device (TAP `tx_packets`, or what the veth peer delivered to
/// `kva`) equals what reached the guest plus what the kernel dropped in the AF_PACKET socket
/// buffer (`uplink_kernel_drops`, from PACKET_STATISTICS); the device itself drops nothing.
fn rxonly(uplink: Uplink) {
    let r = rig("rx", uplink);
    let host = uplink.host_if();
    // Static neighbour: frames go straight to the guest's MAC without ARP.
    run(r.ns.cmd("ip").args([
        "neigh",
        "replace",
        "10.77.0.2",
        "lladdr",
        GUEST_MAC,
        "dev",
        host,
    ]));
    let mut tp = Testpmd::start(&r.kv.socket, "rxonly", &r.dir.0);
    tp.wait_started();

    // Both counters are on the sending side of the namespace: the TAP's own transmit, or
    // the veth peer's transmit (what arrives at kva).
    let handed = |ns: &NetNs| ns.if_stat(host, "tx_packets");
    let dropped_before_knic = |ns: &NetNs| ns.if_stat(host, "tx_dropped");
    let handed_before = handed(&r.ns);
    let dropped_before = dropped_before_knic(&r.ns);
    let kernel_drops_before = u(&r.kv.stats(), "uplink_kernel_drops");
    // Feed until the guest has a million packets. A momentarily slower reader makes the
    // kernel drop before the device (TAP tx_dropped, socket buffer): reported, not hidden.
    let blast = workspace_bin("knic-blast");
    let start = std::time::Instant::now();
    while u(&r.kv.stats(), "rx_packets") < BULK {
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "{uplink:?}: under a million packets reached the guest in 240 s: {}",
            r.kv.stats()
        );
        run(r.ns.cmd(&blast).args([host, "100000"]));
    }
    let accounted = |st: &serde_json::Value| {
        u(st, "rx_packets") + u(st, "uplink_kernel_drops") - kernel_drops_before
    };
    wait_for(
        "the device to drain the uplink",
        Duration::from_secs(10),
        || accounted(&r.kv.stats()) >= handed(&r.ns) - handed_before,
    );
    // Let testpmd poll the last descriptors before stopping it.
    std::thread::sleep(Duration::from_millis(500));
    let pmd = tp.stop();
    let st = r.kv.stats();
    let dev_rx = u(&st, "rx_packets");
    let handed_over = handed(&r.ns) - handed_before;
    let before_knic = dropped_before_knic(&r.ns) - dropped_before;
    assert!(
        dev_rx >= BULK,
        "{uplink:?}: only {dev_rx} reached the guest; {st}"
    );
    assert_eq!(
        accounted(&st),
        handed_over,
        "{uplink:?}: kernel handed over {handed_over}; device {st}"
    );
    assert_eq!(KnicVhost::total_drops(&st), 0, "{st}");
    assert_eq!(
        pmd.rx_packets, dev_rx,
        "{uplink:?}: testpmd {pmd:?} vs device {st}"
    );
    eprintln!(
        "rxonly {uplink:?}: guest received {dev_rx} of {handed_over} handed over; socket-buffer drops {}, drops before the uplink {before_knic}",
        u(&st, "uplink_kernel_drops") - kernel_drops_before
    );
}

#[test]
fn rxonly_moves_a_million_packets_from_the_tap_without_drops() {
    let _one = serial();
    rxonly(Uplink::Tap);
}

#[test]
fn rxonly_moves_a_million_packets_from_af_packet_without_drops() {
    let _one = serial();
    rxonly(Uplink::Veth);
}

#[test]
fn rxonly_moves_a_million_packets_from_af_xdp_without_drops() {
    let _one = serial();
    rxonly(Uplink::Xdp);
}
