//! Two real Linux guests (Debian's cloud kernel under QEMU 10 TCG, busybox initramfs) on
//! knic-agent's ports, a peer in a namespace behind the agent's AF_PACKET uplink (a veth):
//! everything between them crosses the library kernel's stack (its routing, its TCP offload
//! handling). Each guest pings the peer and the other guest (all replies), sends the peer
//! 64 MiB over TCP and receives 64 MiB from it, SHA-256 of the payload compared on both
//! ends. Guest 1 sends with TSO (its 64 KiB frames counted entering the library), guest 2
//! with TSO off (QEMU `host_tso4=off,host_tso6=off`; none counted). Both guests boot at
//! once, so the suite pays for one TCG boot. Needs root, QEMU, the cloud kernel,
//! busybox-static, xz and sha256sum (`deploy/dev/setup-debian.sh`), and the workspace's
//! binaries (`cargo build --release -p knic-agent`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use guest_tests::agent::{
    KnicAgent, PEER_IP, Topology, assert_copy_accounting, gateway_ip, guest_ip,
};
use guest_tests::{Proc, Scratch, initramfs, require_root, require_tool, run, serial, wait_for};

/// Bytes each transfer moves.
const TRANSFER: u64 = 64 << 20;
/// Whole-test bound for one step under TCG on a shared 2-core machine.
const STEP: Duration = Duration::from_secs(420);

/// The guest's side of the scenario; `n` is its port, `other` the other guest's.
fn guest_script(n: u8, other: u8) -> String {
    let mib = TRANSFER >> 20;
    format!(
        r#"ip link set eth0 up
ip addr add {me}/24 dev eth0
ip route add default via {gw}
echo KNIC_TSO=$(cat /sys/class/net/eth0/features 2>/dev/null)
i=0; until ping -c 1 -W 1 {peer} >/dev/null 2>&1 || [ $i -ge 90 ]; do i=$((i+1)); done
if ping -c 5 -w 30 {peer}; then echo KNIC_PEER_PING_OK; else echo KNIC_PEER_PING_FAIL; fi
i=0; until ping -c 1 -W 1 {them} >/dev/null 2>&1 || [ $i -ge 180 ]; do i=$((i+1)); done
if ping -c 5 -w 30 {them}; then echo KNIC_OTHER_PING_OK; else echo KNIC_OTHER_PING_FAIL; fi
echo KNIC_PINGED
nc -l -p 50{n}0 -e /bin/true
dd if=/dev/urandom of=/tmp/out bs=1M count={mib} 2>/dev/null
echo KNIC_OUT_SHA=$(sha256sum /tmp/out | cut -d' ' -f1)
printf '#!/bin/sh\nexec cat /tmp/out\n' > /bin/send.sh; chmod +x /bin/send.sh
printf '#!/bin/sh\nsha256sum > /tmp/insum\n' > /bin/recv.sh; chmod +x /bin/recv.sh
i=0; until nc {peer} 50{n}1 -e /bin/send.sh || [ $i -ge 60 ]; do sleep 1; i=$((i+1)); done
echo KNIC_SENT
rm /tmp/out
echo KNIC_LISTENING
nc -l -p 50{n}2 -e /bin/recv.sh
echo KNIC_IN_SHA=$(cut -d' ' -f1 /tmp/insum)
echo KNIC_DONE"#,
        me = guest_ip(n),
        gw = gateway_ip(n),
        peer = PEER_IP,
        them = guest_ip(other),
    )
}

/// QEMU (TCG) with one virtio-net on the vhost-user `socket`; `tso` false masks the host
/// TSO features from the guest (QEMU's own properties), so it sends MTU-sized frames.
fn start_vm(initrd: &Path, socket: &Path, console: &Path, n: u8, tso: bool) -> Proc {
    let (kernel, _) = initramfs::cloud_kernel();
    let mut device = format!("virtio-net-pci,netdev=n0,mac=52:54:00:4b:00:0{n}");
    if !tso {
        device.push_str(",host_tso4=off,host_tso6=off");
    }
    let mut cmd = Command::new(require_tool("qemu-system-x86_64"));
    cmd.args(["-machine", "q35,accel=tcg", "-m", "256", "-smp", "1"])
        .args(["-object", "memory-backend-memfd,id=mem0,size=256M,share=on"])
        .args(["-numa", "node,memdev=mem0"])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1"])
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-chardev")
        .arg(format!("socket,id=c0,path={}", socket.display()))
        .arg("-netdev")
        .arg("vhost-user,id=n0,chardev=c0")
        .arg("-device")
        .arg(device);
    Proc::spawn("qemu-system-x86_64", &mut cmd)
}

struct Guest {
    vm: Proc,
    console: PathBuf,
}

impl Guest {
    fn text(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    fn wait(&mut self, marker: &str, agent: &KnicAgent) -> String {
        let console = self.console.clone();
        wait_for(
            &format!("{} to print {marker}", console.display()),
            STEP,
            || {
                let text = std::fs::read_to_string(&console).unwrap_or_default();
                if text.contains(marker) {
                    return true;
                }
                if let Ok(Some(status)) = self.vm.child.try_wait() {
                    panic!(
                        "QEMU exited ({status}) before {marker}:\n{text}\nagent:\n{}",
                        agent.log_text()
                    );
                }
                false
            },
        );
        self.text()
    }

    fn value(&self, key: &str) -> String {
        let text = self.text();
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no {key} on the console:\n{text}"))
    }
}

fn sha256(path: &Path) -> String {
    let out = run(Command::new(require_tool("sha256sum")).arg(path));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap_or_else(|e| panic!("{e}"));
    run(Command::new("chmod").arg("+x").arg(path));
}

#[test]
fn two_guests_ping_and_move_64_mib_each_way_through_the_library() {
    let _one = serial();
    require_root();
    require_tool("xz");
    let (_, modules) = initramfs::cloud_kernel();
    let topo = Topology::new("agq");
    let dir = Scratch::new("agent-qemu");
    let agent = KnicAgent::start(&topo.agent_ns, &dir.0, &Topology::agent_args(&dir.0, 2, ""));

    // The peer: one listener per guest hashing what arrives, and a payload to send back.
    let payload = dir.0.join("peer-payload");
    run(Command::new("dd").args([
        "if=/dev/urandom",
        &format!("of={}", payload.display()),
        "bs=1M",
        &format!("count={}", TRANSFER >> 20),
        "status=none",
    ]));
    let payload_sha = sha256(&payload);
    let mut listeners = Vec::new();
    for n in 1..=2u8 {
        let recv = dir.0.join(format!("peer-recv{n}.sh"));
        let sum = dir.0.join(format!("peer-in{n}.sum"));
        script(&recv, &format!("sha256sum > {}", sum.display()));
        let mut cmd = topo.peer_ns.cmd("busybox");
        cmd.args(["nc", "-l", "-p", &format!("50{n}1"), "-e"])
            .arg(&recv);
        listeners.push((Proc::spawn("busybox nc -l", &mut cmd), sum));
    }

    let mut guests = Vec::new();
    for (n, other, tso) in [(1u8, 2u8, true), (2, 1, false)] {
        let initrd = dir.0.join(format!("initramfs{n}.cpio"));
        initramfs::build(&initrd, &modules, &guest_script(n, other));
        let console = dir.0.join(format!("console{n}.log"));
        let vm = start_vm(
            &initrd,
            &dir.0.join(format!("vm{n}.sock")),
            &console,
            n,
            tso,
        );
        guests.push(Guest { vm, console });
    }

    // Both guests ping before either starts its bulk transfer, so the pings measure the
    // path, not a queue behind 64 MiB; then the test lets each go on.
    for g in &mut guests {
        g.wait("KNIC_PINGED", &agent);
    }
    // What each guest negotiated, while both are attached: both accept TSO frames.
    for name in ["vm1", "vm2"] {
        let p = agent.port(name);
        assert_eq!(p["guest_connected"], true, "{p}");
        assert_eq!(p["library_carrier"], true, "{p}");
        assert_eq!(p["guest_offloads"]["tso4"], true, "{p}");
    }
    for n in 1..=2u8 {
        wait_for(&format!("guest {n} to take the go"), STEP, || {
            topo.peer_ns
                .cmd("busybox")
                .args(["nc", &guest_ip(n), &format!("50{n}0"), "-e", "/bin/true"])
                .status()
                .is_ok_and(|s| s.success())
        });
    }
    for (i, g) in guests.iter_mut().enumerate() {
        let text = g.wait("KNIC_LISTENING", &agent);
        for marker in ["KNIC_PEER_PING_OK", "KNIC_OTHER_PING_OK"] {
            assert!(
                text.contains(marker),
                "guest {}: no {marker}:\n{text}",
                i + 1
            );
        }
        assert_eq!(
            text.matches("5 packets received").count(),
            2,
            "guest {}: every ping answered:\n{text}",
            i + 1
        );
    }
    // Guest -> peer arrived whole.
    for (i, (l, sum)) in listeners.iter_mut().enumerate() {
        assert!(
            l.stop("-0", STEP),
            "the peer's listener {} never ended",
            i + 1
        );
        let got = std::fs::read_to_string(&*sum).unwrap_or_default();
        let sent = guests[i].value("KNIC_OUT_SHA=");
        assert_eq!(
            got.split_whitespace().next(),
            Some(sent.as_str()),
            "guest {} -> peer payload",
            i + 1
        );
    }
    // Peer -> guest.
    let send = dir.0.join("peer-send.sh");
    script(&send, &format!("exec cat {}", payload.display()));
    for n in 1..=2u8 {
        wait_for(&format!("the peer to reach guest {n}"), STEP, || {
            topo.peer_ns
                .cmd("busybox")
                .args(["nc", &guest_ip(n), &format!("50{n}2"), "-e"])
                .arg(&send)
                .status()
                .is_ok_and(|s| s.success())
        });
    }
    for (i, g) in guests.iter_mut().enumerate() {
        g.wait("KNIC_DONE", &agent);
        assert_eq!(
            g.value("KNIC_IN_SHA="),
            payload_sha,
            "peer -> guest {}",
            i + 1
        );
    }

    let st1 = agent.port_stats("vm1");
    let st2 = agent.port_stats("vm2");
    eprintln!("vm1: {st1}\nvm2: {st2}");
    let large = |st: &serde_json::Value, k: &str| st["library"][k].as_u64().unwrap_or(0);
    // TSO on: the guest's 64 KiB frames entered the library as GSO packets, whole.
    assert!(large(&st1, "rx_large_frames") > 0, "vm1 with TSO: {st1}");
    // The peer's TSO/GRO traffic reached guest 1 (GUEST_TSO negotiated) as large frames.
    assert!(large(&st1, "tx_large_frames") > 0, "vm1 receiving: {st1}");
    // TSO off: nothing larger than the MTU came from guest 2.
    assert_eq!(large(&st2, "rx_large_frames"), 0, "vm2 without TSO: {st2}");
    for (name, st) in [("vm1", &st1), ("vm2", &st2)] {
        let bytes = st["library"]["rx_bytes"].as_u64().unwrap_or(0);
        assert!(
            bytes >= TRANSFER,
            "{name}: {bytes} bytes entered the library"
        );
        for dir in ["to_stack", "to_guest"] {
            let per_frame = assert_copy_accounting(st, dir);
            eprintln!("{name} {dir}: {per_frame:.4} copies per frame");
        }
    }
    for g in &mut guests {
        g.wait("KNIC_DONE", &agent);
        assert!(g.vm.stop("-TERM", Duration::from_secs(30)) || g.vm.child.try_wait().is_ok());
    }
}

/// QEMU reattaches: cycles of boot, ping the peer, power off.
const QEMU_CYCLES: usize = 3;

#[test]
fn a_qemu_guest_attaches_and_detaches_without_leaks() {
    let _one = serial();
    require_root();
    require_tool("xz");
    let (_, modules) = initramfs::cloud_kernel();
    let topo = Topology::new("agqr");
    let dir = Scratch::new("agent-qemu-re");
    let agent = KnicAgent::start(&topo.agent_ns, &dir.0, &Topology::agent_args(&dir.0, 1, ""));
    let initrd = dir.0.join("initramfs.cpio");
    initramfs::build(
        &initrd,
        &modules,
        &format!(
            "ip link set eth0 up\nip addr add {}/24 dev eth0\nip route add default via {}\n\
             i=0; until ping -c 1 -W 1 {PEER_IP} >/dev/null 2>&1 || [ $i -ge 90 ]; do i=$((i+1)); done\n\
             if ping -c 3 -w 20 {PEER_IP}; then echo KNIC_PING_OK; else echo KNIC_PING_FAIL; fi",
            guest_ip(1),
            gateway_ip(1)
        ),
    );
    let cycle = |i: usize| {
        let console = dir.0.join(format!("console-{i}.log"));
        let mut g = Guest {
            vm: start_vm(&initrd, &dir.0.join("vm1.sock"), &console, 1, true),
            console,
        };
        let text = g.wait("KNIC_PING_", &agent);
        assert!(
            text.contains("KNIC_PING_OK") && text.contains("3 packets received"),
            "cycle {i}:\n{text}"
        );
        // The script ends with a power-off: QEMU exits and the frontend goes away.
        wait_for("QEMU to exit", STEP, || {
            matches!(g.vm.child.try_wait(), Ok(Some(_)))
        });
        agent.wait_guest("vm1", false, Duration::from_secs(20));
    };
    cycle(0);
    let links = agent.library_links();
    let start = agent.resources();
    for i in 1..=QEMU_CYCLES {
        cycle(i);
    }
    let end = agent.resources();
    eprintln!("{QEMU_CYCLES} QEMU cycles: start {start:?}, end {end:?}");
    assert_eq!(agent.library_links(), links, "the library's interfaces");
    assert_eq!(end.fds, start.fds, "the agent's open fds");
    assert_eq!(end.threads, start.threads, "the agent's threads");
    assert!(
        end.rss_kib <= start.rss_kib + 4096,
        "the agent's RSS grew from {} KiB to {} KiB",
        start.rss_kib,
        end.rss_kib
    );
}
