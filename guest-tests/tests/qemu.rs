//! A real Linux guest (Debian's cloud kernel under QEMU 10, busybox initramfs) with
//! virtio-net on knic-vhost, whose TAP uplink sits in a network namespace: the guest pings
//! the namespace. Exercises the Linux driver's own negotiation (MRG_RXBUF, EVENT_IDX, offloads,
//! QEMU's vhost-user message order). Needs root, QEMU, the cloud kernel, busybox-static and
//! xz: run `deploy/dev/setup-debian.sh` first.
//!
//! QEMU sends SET_VRING_ENABLE before SET_FEATURES; this test is what shows the relay in front
//! of the rust-vmm handler (`vhost_backend::relay`) makes that work.

use std::process::Command;
use std::time::Duration;

use guest_tests::{
    KnicVhost, NetNs, Proc, Scratch, initramfs, require_root, require_tool, run, serial, wait_for,
};

#[test]
fn linux_guest_pings_through_knic_vhost() {
    let _one = serial();
    require_root();
    let qemu = require_tool("qemu-system-x86_64");
    require_tool("xz");
    let (kernel, modules) = initramfs::cloud_kernel();

    let ns = NetNs::new("qemu");
    let dir = Scratch::new("qemu");
    let kv = KnicVhost::start(&ns, "tap:kvtap0", &dir.0);
    run(ns
        .cmd("ip")
        .args(["addr", "add", "10.77.0.1/24", "dev", "kvtap0"]));
    run(ns.cmd("ip").args(["link", "set", "kvtap0", "up"]));

    let initrd = dir.0.join("initramfs.cpio");
    initramfs::build(
        &initrd,
        &modules,
        "ip link set eth0 up\nip addr add 10.77.0.2/24 dev eth0\n\
         if ping -c 3 -W 5 10.77.0.1; then echo KNIC_PING_OK; else echo KNIC_PING_FAIL; fi",
    );
    let console = dir.0.join("console.log");
    // TCG: KVM may exist but be unusable (nested virtualisation stops with an internal error).
    let accel = "tcg";
    let mut cmd = Command::new(qemu);
    cmd.args([
        "-machine",
        &format!("q35,accel={accel}"),
        "-m",
        "256",
        "-smp",
        "1",
    ])
    .args(["-object", "memory-backend-memfd,id=mem0,size=256M,share=on"])
    .args(["-numa", "node,memdev=mem0"])
    .arg("-kernel")
    .arg(&kernel)
    .arg("-initrd")
    .arg(&initrd)
    .args(["-append", "console=ttyS0 panic=-1"])
    .args(["-display", "none", "-monitor", "none", "-no-reboot"])
    .arg("-serial")
    .arg(format!("file:{}", console.display()))
    .arg("-chardev")
    .arg(format!("socket,id=c0,path={}", kv.socket.display()))
    .args(["-netdev", "vhost-user,id=n0,chardev=c0"])
    .args(["-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56"]);
    let mut vm = Proc::spawn("qemu-system-x86_64", &mut cmd);
    let log = || std::fs::read_to_string(&console).unwrap_or_default();
    let backend_log = dir.0.join("knic-vhost.log");
    wait_for("the guest's ping verdict", Duration::from_secs(240), || {
        let text = log();
        if text.contains("KNIC_PING_") {
            return true;
        }
        if let Ok(Some(status)) = vm.child.try_wait() {
            panic!("QEMU exited ({status}) before the guest answered:\n{text}");
        }
        let kv_log = std::fs::read_to_string(&backend_log).unwrap_or_default();
        assert!(
            !kv_log.contains("frontend connection ended"),
            "knic-vhost dropped QEMU's connection:\n{kv_log}"
        );
        false
    });
    let text = log();
    assert!(
        text.contains("KNIC_PING_OK"),
        "guest could not ping through knic-vhost:\n{text}"
    );
    let st = kv.stats();
    assert!(st["tx_packets"].as_u64().unwrap_or(0) >= 4, "{st}");
    assert!(st["rx_packets"].as_u64().unwrap_or(0) >= 4, "{st}");
    assert_eq!(KnicVhost::total_drops(&st), 0, "{st}");
    assert!(vm.stop("-TERM", Duration::from_secs(30)) || vm.child.try_wait().is_ok());
}
