//! knic-vhost with DPDK testpmd (`net_virtio_user`) as the guest, and a TAP uplink inside a
//! network namespace these tests create. Needs root, `ip`, `busybox` (ping) and
//! `dpdk-testpmd`: run `deploy/dev/setup-debian.sh` first.
//!
//!   cargo test -p guest-tests --test testpmd -- --test-threads=1

use std::time::Duration;

use guest_tests::{
    KnicVhost, NetNs, Scratch, Testpmd, require_root, require_tool, run, serial, wait_for,
    workspace_bin,
};

const TAP: &str = "kvtap0";
/// Packets each bulk test must move.
const BULK: u64 = 1_000_000;

fn preflight() {
    require_root();
    for tool in ["ip", "busybox", "dpdk-testpmd", "kill"] {
        require_tool(tool);
    }
}

fn tap_up(ns: &NetNs) {
    run(ns
        .cmd("ip")
        .args(["addr", "add", "10.77.0.1/24", "dev", TAP]));
    run(ns.cmd("ip").args(["link", "set", TAP, "up"]));
    // Keep IPv6 chatter (router solicitations, MLD) off the counters.
    let _ = ns
        .cmd("sysctl")
        .args(["-qw", &format!("net.ipv6.conf.{TAP}.disable_ipv6=1")])
        .output();
}

fn u(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("counter {k} missing in {v}"))
}

#[test]
fn icmpecho_answers_ping_through_tap() {
    let _one = serial();
    preflight();
    let ns = NetNs::new("echo");
    let dir = Scratch::new("echo");
    let kv = KnicVhost::start(&ns, TAP, &dir.0);
    tap_up(&ns);
    let mut tp = Testpmd::start(&kv.socket, "icmpecho", &dir.0);
    tp.wait_started();

    let out = ns
        .cmd("busybox")
        .args(["ping", "-c", "5", "-W", "5", "10.77.0.2"])
        .output()
        .expect("run ping");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("5 packets received"),
        "ping through knic-vhost to testpmd icmpecho failed:\n{text}\n{}\ntestpmd:\n{}",
        String::from_utf8_lossy(&out.stderr),
        tp.log_text()
    );
    let st = kv.stats();
    // Guest received the ARP request and 5 echo requests, and sent their replies.
    assert!(u(&st, "rx_packets") >= 6, "{st}");
    assert!(u(&st, "tx_packets") >= 6, "{st}");
    assert_eq!(KnicVhost::total_drops(&st), 0, "{st}");
    tp.stop();
}

#[test]
fn txonly_moves_a_million_packets_to_the_tap_without_drops() {
    let _one = serial();
    preflight();
    let ns = NetNs::new("tx");
    let dir = Scratch::new("tx");
    let kv = KnicVhost::start(&ns, TAP, &dir.0);
    tap_up(&ns);
    let tap_rx_before = ns.if_stat(TAP, "rx_packets");
    let mut tp = Testpmd::start(&kv.socket, "txonly", &dir.0);
    tp.wait_started();
    wait_for("a million guest packets", Duration::from_secs(120), || {
        u(&kv.stats(), "tx_packets") >= BULK
    });
    let pmd = tp.stop();
    let st = kv.stats();
    let dev_tx = u(&st, "tx_packets");
    // Every packet testpmd put on the ring was taken by the device, and none was dropped.
    // (testpmd's own TX-dropped counts packets it could not enqueue: the ring was full, so
    // they never reached the device.)
    assert_eq!(pmd.tx_packets, dev_tx, "testpmd {pmd:?} vs device {st}");
    assert!(dev_tx >= BULK);
    assert_eq!(KnicVhost::total_drops(&st), 0, "{st}");
    eprintln!("txonly: device took {dev_tx}; testpmd {pmd:?}");
    // The kernel saw every one of them arrive on the TAP.
    wait_for(
        "the TAP counters to settle",
        Duration::from_secs(10),
        || ns.if_stat(TAP, "rx_packets") - tap_rx_before >= dev_tx,
    );
}

#[test]
fn rxonly_moves_a_million_packets_from_the_tap_without_drops() {
    let _one = serial();
    preflight();
    let ns = NetNs::new("rx");
    let dir = Scratch::new("rx");
    let kv = KnicVhost::start(&ns, TAP, &dir.0);
    tap_up(&ns);
    // Static neighbour: frames go straight to the guest's MAC without ARP.
    run(ns.cmd("ip").args([
        "neigh",
        "replace",
        "10.77.0.2",
        "lladdr",
        "52:54:00:12:34:56",
        "dev",
        TAP,
    ]));
    let mut tp = Testpmd::start(&kv.socket, "rxonly", &dir.0);
    tp.wait_started();

    let tap_tx_before = ns.if_stat(TAP, "tx_packets");
    let tap_drop_before = ns.if_stat(TAP, "tx_dropped");
    // Feed the TAP from inside the namespace until the guest has a million packets. A TAP
    // whose reader is momentarily slower drops on the kernel side (tx_dropped): those never
    // reach the device and are accounted below, so send in rounds until enough arrived.
    let blast = workspace_bin("knic-blast");
    for _ in 0..20 {
        if u(&kv.stats(), "rx_packets") >= BULK {
            break;
        }
        run(ns.cmd(&blast).args([TAP, "250000"]));
    }
    wait_for(
        "the device to drain the TAP",
        Duration::from_secs(10),
        || {
            let tap_tx = ns.if_stat(TAP, "tx_packets") - tap_tx_before;
            u(&kv.stats(), "rx_packets") >= tap_tx
        },
    );
    // Let testpmd poll the last descriptors before stopping it.
    std::thread::sleep(Duration::from_millis(500));
    let pmd = tp.stop();
    let st = kv.stats();
    let dev_rx = u(&st, "rx_packets");
    let tap_tx = ns.if_stat(TAP, "tx_packets") - tap_tx_before;
    let tap_dropped = ns.if_stat(TAP, "tx_dropped") - tap_drop_before;
    assert!(dev_rx >= BULK, "only {dev_rx} reached the guest; {st}");
    // Everything the TAP handed over reached the guest: no drop in between.
    assert_eq!(
        dev_rx, tap_tx,
        "TAP sent {tap_tx} (kernel-side drops {tap_dropped}); device {st}"
    );
    assert_eq!(KnicVhost::total_drops(&st), 0, "{st}");
    assert_eq!(pmd.rx_packets, dev_rx, "testpmd {pmd:?} vs device {st}");
    eprintln!(
        "rxonly: guest received {dev_rx}; TAP handed over {tap_tx}, kernel-side drops {tap_dropped}"
    );
}
