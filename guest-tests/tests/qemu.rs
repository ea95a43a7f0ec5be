//! A real Linux guest (Debian's cloud kernel under QEMU 10, busybox initramfs) with
//! virtio-net on knic-vhost, whose TAP uplink sits in a network namespace: the guest pings
//! the namespace, moves a TCP stream with iperf3, and keeps working across a backend crash
//! and restart. Exercises the Linux driver's own negotiation (MRG_RXBUF, EVENT_IDX, offloads,
//! QEMU's vhost-user message order) and QEMU's reconnect. Needs root, QEMU, the cloud kernel,
//! busybox-static, iperf3 and xz: run `deploy/dev/setup-debian.sh` first.
//!
//! QEMU sends SET_VRING_ENABLE before SET_FEATURES; these tests are what show the relay in
//! front of the rust-vmm handler (`vhost_backend::relay`) makes that work.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use vhost_backend::features::OFFERED_FEATURES;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

use guest_tests::qemu::QemuGuest;
use guest_tests::{
    KnicVhost, NetNs, Proc, Scratch, initramfs, require_root, require_tool, run, serial, wait_for,
};

const HOST_IP: &str = "10.77.0.1";
/// Bytes the guest's iperf3 client sends (`-n`).
const IPERF_BYTES: u64 = 8 << 20;

/// The namespace side's MAC: fixed, so a restarted knic-vhost's new TAP answers at the
/// address the guest's neighbour cache already holds.
const HOST_MAC: &str = "02:4b:4e:49:43:01";

/// Addresses knic-vhost's TAP (recreated by every knic-vhost start) on the namespace side.
fn address_tap(ns: &NetNs) {
    run(ns
        .cmd("ip")
        .args(["link", "set", "kvtap0", "address", HOST_MAC]));
    run(ns
        .cmd("ip")
        .args(["addr", "add", &format!("{HOST_IP}/24"), "dev", "kvtap0"]));
    run(ns.cmd("ip").args(["link", "set", "kvtap0", "up"]));
}

/// Waits until the console shows one of `markers`, failing if QEMU exits first or
/// knic-vhost (logging to `backend_log`) dropped the frontend.
fn wait_console(
    vm: &mut Proc,
    console: &Path,
    backend_log: &Path,
    markers: &[&str],
    timeout: Duration,
) -> String {
    let log = || std::fs::read_to_string(console).unwrap_or_default();
    wait_for(&format!("the guest to print {markers:?}"), timeout, || {
        let text = log();
        if markers.iter().any(|m| text.contains(m)) {
            return true;
        }
        if let Ok(Some(status)) = vm.child.try_wait() {
            panic!("QEMU exited ({status}) before the guest answered:\n{text}");
        }
        let kv_log = std::fs::read_to_string(backend_log).unwrap_or_default();
        assert!(
            !kv_log.contains("frontend connection ended"),
            "knic-vhost dropped QEMU's connection:\n{kv_log}"
        );
        false
    });
    log()
}

/// Feature bits the backend offers that a Linux guest behind QEMU 10 must end up with
/// (QEMU passes them through from the backend; the driver wants every one).
const GUEST_FEATURES: [(&str, u32); 13] = [
    ("CSUM", VIRTIO_NET_F_CSUM),
    ("GUEST_CSUM", VIRTIO_NET_F_GUEST_CSUM),
    ("GUEST_TSO4", VIRTIO_NET_F_GUEST_TSO4),
    ("GUEST_TSO6", VIRTIO_NET_F_GUEST_TSO6),
    ("GUEST_ECN", VIRTIO_NET_F_GUEST_ECN),
    ("HOST_TSO4", VIRTIO_NET_F_HOST_TSO4),
    ("HOST_TSO6", VIRTIO_NET_F_HOST_TSO6),
    ("HOST_ECN", VIRTIO_NET_F_HOST_ECN),
    ("MRG_RXBUF", VIRTIO_NET_F_MRG_RXBUF),
    ("MQ", VIRTIO_NET_F_MQ),
    ("RING_EVENT_IDX", VIRTIO_RING_F_EVENT_IDX),
    ("RING_INDIRECT_DESC", VIRTIO_RING_F_INDIRECT_DESC),
    ("VERSION_1", VIRTIO_F_VERSION_1),
];

/// Checks the guest's negotiated feature string (sysfs `features`: one '0'/'1' per bit, bit 0
/// first) printed as `KNIC_FEATURES=...`; returns the names of the missing bits.
fn missing_features(console: &str) -> Vec<&'static str> {
    let bits = console
        .lines()
        .find_map(|l| l.trim().strip_prefix("KNIC_FEATURES="))
        .unwrap_or_else(|| panic!("the guest printed no feature bits:\n{console}"));
    GUEST_FEATURES
        .iter()
        .filter(|(name, bit)| {
            assert!(
                OFFERED_FEATURES & (1 << bit) != 0,
                "{name} is not offered by the backend"
            );
            bits.as_bytes().get(*bit as usize) != Some(&b'1')
        })
        .map(|(name, _)| *name)
        .collect()
}

#[test]
fn linux_guest_pings_through_knic_vhost() {
    let _one = serial();
    require_root();
    require_tool("xz");
    let (_, modules) = initramfs::cloud_kernel();

    let ns = NetNs::new("qemu");
    let dir = Scratch::new("qemu");
    let kv = KnicVhost::start_with_queues(&ns, "tap:kvtap0", &dir.0, 2);
    address_tap(&ns);

    let initrd = dir.0.join("initramfs.cpio");
    initramfs::build(
        &initrd,
        &modules,
        &format!(
            "echo KNIC_FEATURES=$(cat /sys/class/net/eth0/device/features)\n\
         ip link set eth0 up\nip addr add 10.77.0.2/24 dev eth0\n\
         {PING_ALL}\n\
         if ping_all 3 15 10.77.0.1; then echo KNIC_PING_OK; else echo KNIC_PING_FAIL; fi"
        ),
    );
    let console = dir.0.join("console.log");
    let mut vm = QemuGuest::new(&initrd, &kv.socket, &console)
        .queues(2)
        .spawn()
        .vm;
    let text = wait_console(
        &mut vm,
        &console,
        &dir.0.join("knic-vhost.log"),
        &["KNIC_PING_"],
        Duration::from_secs(240),
    );
    assert!(
        text.contains("KNIC_PING_OK"),
        "guest could not ping through knic-vhost:\n{text}"
    );
    let missing = missing_features(&text);
    assert!(
        missing.is_empty(),
        "the guest did not negotiate {missing:?}:\n{text}"
    );
    let st = kv.stats();
    assert!(st["tx_packets"].as_u64().unwrap_or(0) >= 4, "{st}");
    assert!(st["rx_packets"].as_u64().unwrap_or(0) >= 4, "{st}");
    // Nothing is dropped, not even the namespace's first frames (IPv6 neighbour discovery)
    // while the guest's driver has started the second pair but not yet enabled it: the TAP
    // queue of a pair that cannot receive is detached, so the host steers nothing to it.
    assert_eq!(KnicVhost::total_drops(&st), 0, "{st}");
    assert!(
        vm.stop("-TERM", Duration::from_secs(30)),
        "QEMU did not exit within 30 s of SIGTERM"
    );
}

/// A guest shell function: `ping_all N T ADDR` sends N echo requests within T seconds and
/// succeeds only when all N replies came back (busybox ping's own status is success on any).
const PING_ALL: &str = r#"ping_all() { out=$(ping -c "$1" -w "$2" "$3"); echo "$out"; echo "$out" | grep -q " $1 packets received"; }"#;

/// The guest's script: ping, an iperf3 TCP transfer, then (while the test kills and restarts
/// knic-vhost) wait for QEMU to take the link down and up again (`carrier_changes` counts
/// both, however fast) and ping once more. The boot id is
/// printed at both ends to show the same kernel ran throughout.
const RESTART_SCRIPT: &str = r#"ip link set eth0 up
ip addr add 10.77.0.2/24 dev eth0
echo KNIC_BOOT_ID=$(cat /proc/sys/kernel/random/boot_id)
if ping_all 3 15 10.77.0.1; then echo KNIC_PING1_OK; else echo KNIC_PING1_FAIL; fi
if iperf3 -c 10.77.0.1 -n 8M; then echo KNIC_IPERF_OK; else echo KNIC_IPERF_FAIL; fi
c0=$(cat /sys/class/net/eth0/carrier_changes)
echo KNIC_READY_FOR_RESTART
i=0; while [ $(( $(cat /sys/class/net/eth0/carrier_changes) - c0 )) -lt 2 ] && [ $i -lt 120 ]; do sleep 1; i=$((i+1)); done
echo KNIC_CARRIER_CHANGES=$(( $(cat /sys/class/net/eth0/carrier_changes) - c0 ))
i=0; while [ "$(cat /sys/class/net/eth0/carrier)" != 1 ] && [ $i -lt 120 ]; do sleep 1; i=$((i+1)); done
echo KNIC_CARRIER_AFTER_RESTART=$(cat /sys/class/net/eth0/carrier)
ok=0; i=0; while [ $ok = 0 ] && [ $i -lt 20 ]; do ping -c 1 -W 2 10.77.0.1 && ok=1; i=$((i+1)); done
if [ $ok = 1 ] && ping_all 3 15 10.77.0.1; then echo KNIC_PING2_OK; else echo KNIC_PING2_FAIL; fi
echo KNIC_BOOT_ID=$(cat /proc/sys/kernel/random/boot_id)
echo KNIC_DONE"#;

fn boot_ids(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("KNIC_BOOT_ID="))
        .collect()
}

/// `iperf3 -s -1 -J` in the namespace: one test, then its JSON report on stdout.
fn iperf_server(ns: &NetNs, dir: &Path) -> (Proc, PathBuf) {
    let report = dir.join("iperf3-server.json");
    let out = std::fs::File::create(&report).unwrap_or_else(|e| panic!("iperf3 report: {e}"));
    let mut cmd = ns.cmd(require_tool("iperf3"));
    cmd.args(["-s", "-1", "-J", "-B", HOST_IP])
        .stdout(out)
        .stderr(Stdio::null());
    (Proc::spawn("iperf3 -s", &mut cmd), report)
}

/// Kills knic-vhost with SIGKILL under a running guest (QEMU as client, `reconnect-ms`),
/// starts a new one on the same socket and shows the same guest, never rebooted, gets its
/// link back and pings again. Before that, iperf3 (Debian's, copied into the initramfs with
/// its libraries) moves 8 MiB over TCP to an `iperf3 -s` in the namespace.
#[test]
fn linux_guest_runs_iperf3_and_survives_a_backend_restart() {
    let _one = serial();
    require_root();
    require_tool("xz");
    let iperf3 = require_tool("iperf3");
    let (_, modules) = initramfs::cloud_kernel();

    let ns = NetNs::new("qemurs");
    let dir = Scratch::new("qemurs");
    let mut kv = KnicVhost::start(&ns, "tap:kvtap0", &dir.0);
    address_tap(&ns);
    let (mut server, report) = iperf_server(&ns, &dir.0);

    let initrd = dir.0.join("initramfs.cpio");
    initramfs::build_with_tools(
        &initrd,
        &modules,
        &format!("{PING_ALL}\n{RESTART_SCRIPT}"),
        &[&iperf3],
    );
    let console = dir.0.join("console.log");
    let backend_log = dir.0.join("knic-vhost.log");
    let mut vm = QemuGuest::new(&initrd, &kv.socket, &console)
        .reconnect(true)
        .spawn()
        .vm;

    let text = wait_console(
        &mut vm,
        &console,
        &backend_log,
        &["KNIC_READY_FOR_RESTART"],
        Duration::from_secs(300),
    );
    assert!(text.contains("KNIC_PING1_OK"), "first ping failed:\n{text}");
    assert!(text.contains("KNIC_IPERF_OK"), "iperf3 failed:\n{text}");
    assert!(
        server.stop("-0", Duration::from_secs(10)),
        "iperf3 -s did not finish after its one test"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap_or_default())
            .unwrap_or_else(|e| panic!("iperf3 server report: {e}"));
    // The server stops counting when the client's TEST_END arrives on the control
    // connection, which can overtake the stream's last segments: it must have seen most.
    let received = doc["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    assert!(
        received >= IPERF_BYTES / 2,
        "iperf3 -s received {received}: {doc}"
    );
    let bps = doc["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    let st = kv.stats();
    // Not all of `-n`: when the server closes, the client's last segments may still sit in the
    // guest's socket buffer (seen: 8.0 MB sent, 7.3 MB received, 8.17 MB through the device).
    assert!(
        st["tx_bytes"].as_u64().unwrap_or(0) >= received,
        "the device carried less than the server received: {st}"
    );
    assert_eq!(KnicVhost::total_drops(&st), 0, "{st}");
    eprintln!(
        "iperf3 guest->namespace: {received} bytes at {:.1} Mbit/s; device {st}",
        bps / 1e6
    );

    // Crash and restart the backend under the running guest.
    assert!(
        matches!(vm.child.try_wait(), Ok(None)),
        "QEMU exited before the backend restart"
    );
    kv.kill();
    std::fs::rename(&backend_log, dir.0.join("knic-vhost.1.log"))
        .unwrap_or_else(|e| panic!("keep the first log: {e}"));
    let kv = KnicVhost::start(&ns, "tap:kvtap0", &dir.0);
    address_tap(&ns);
    // Traffic toward the guest while QEMU reconnects: frames wait in the TAP and reach the RX
    // ring as soon as it starts, before QEMU has installed the ring's call eventfd (the lost
    // interrupt `vhost_backend::NetVring` makes up for; without that, about 1 run in 5 here).
    let mut pinger = ns.cmd("ping");
    pinger
        .args(["-i", "0.05", "-W", "1", "10.77.0.2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _pinger = Proc::spawn("ping from the namespace", &mut pinger);

    let text = wait_console(
        &mut vm,
        &console,
        &backend_log,
        &["KNIC_DONE"],
        Duration::from_secs(300),
    );
    assert!(
        matches!(vm.child.try_wait(), Ok(None)),
        "QEMU exited across the backend restart (it must reconnect, not quit)"
    );
    let after = &text[text.find("KNIC_READY_FOR_RESTART").unwrap_or(0)..];
    assert!(
        text.contains("KNIC_CARRIER_CHANGES=2"),
        "the guest did not see its link go down and up once:\n{after}"
    );
    assert!(
        text.contains("KNIC_CARRIER_AFTER_RESTART=1"),
        "the guest's link did not come back:\n{after}"
    );
    assert!(
        text.contains("KNIC_PING2_OK"),
        "no ping after the restart:\n{after}\ndevice {}\nTAP rx {} tx {}",
        kv.stats(),
        ns.if_stat("kvtap0", "rx_packets"),
        ns.if_stat("kvtap0", "tx_packets")
    );
    let ids = boot_ids(&text);
    assert!(
        ids.len() == 2 && ids[0] == ids[1] && text.matches("Linux version").count() == 1,
        "the guest rebooted: boot ids {ids:?}\n{text}"
    );
    let st = kv.stats();
    assert!(st["tx_packets"].as_u64().unwrap_or(0) >= 4, "{st}");
    assert!(st["rx_packets"].as_u64().unwrap_or(0) >= 4, "{st}");
    assert_eq!(KnicVhost::total_drops(&st), 0, "{st}");
    assert!(
        vm.stop("-TERM", Duration::from_secs(30)),
        "QEMU did not exit within 30 s of SIGTERM"
    );
}
