//! Two real Linux guests (Debian's cloud kernel under QEMU 10 TCG, busybox initramfs) on
//! knic-agent's ports, a peer in a namespace behind the agent's uplink on a veth: everything
//! between them crosses the library kernel's stack (its routing, its TCP offload handling).
//! The scenario runs once with the uplink over AF_PACKET and once over AF_XDP. In each round
//! every guest pings the peer and the other guest (all replies), sends the peer 64 MiB over
//! TCP and receives 64 MiB from it, SHA-256 of the payload compared on both ends. Guest 1
//! sends with TSO (its 64 KiB frames counted entering the library), guest 2 with TSO off
//! (QEMU `host_tso4=off,host_tso6=off`; none counted).
//!
//! The guests boot once for both rounds: between them the agent is stopped and a new one
//! started with the other uplink kind on the same sockets, and QEMU (`reconnect-ms`)
//! reconnects. Each round starts only when the peer has reached the guest through that
//! round's agent (a gate the guest listens on), so no round's traffic can have crossed the
//! other round's uplink. Needs root, QEMU, the cloud kernel, busybox-static, xz and
//! sha256sum (`deploy/dev/setup-debian.sh`), and the workspace's binaries
//! (`cargo build --release -p knic-agent`).
//!
//! In the first round a hostile frontend on a third port posts the catalogue of bad TX
//! chains while the transfers run (`guest_tests::hostile`): that port counts each under its
//! reason, the guests' ports count no drop and their checksums match.
//!
//! Also here: one QEMU guest whose port is removed and added again 100 times while the
//! guest runs (QEMU redials each time), with the agent's fds, threads, RSS and the library's
//! interface list back at their start values.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use guest_tests::agent::{
    KnicAgent, LEAK_WARMUP, PEER_IP, RSS_SLACK_KIB, Topology, UplinkKind, assert_copy_accounting,
    gateway_ip, guest_ip,
};
use guest_tests::hostile::attack_port;
use guest_tests::qemu::{Guest, QemuGuest};
use guest_tests::{
    Proc, Scratch, initramfs, require_root, require_tool, run, serial, sha256, wait_for,
};

/// Bytes each transfer moves.
const TRANSFER: u64 = 64 << 20;
/// Whole-test bound for one step under TCG on a shared 2-core machine.
const STEP: Duration = Duration::from_secs(420);
/// The rounds, in order; round `r` (from 1) uses TCP ports `5{r}{n}x` for guest `n`.
const ROUNDS: [UplinkKind; 2] = [UplinkKind::Packet, UplinkKind::Xdp];

/// The guest's side of the scenario, once per round; `n` is its port, `other` the other
/// guest's. Markers carry the round: `KNIC_R1_PINGED`.
fn guest_script(n: u8, other: u8) -> String {
    let mib = TRANSFER >> 20;
    let rounds = (1..=ROUNDS.len())
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        r#"ip link set eth0 up
ip addr add {me}/24 dev eth0
ip route add default via {gw}
echo KNIC_TSO=$(cat /sys/class/net/eth0/features 2>/dev/null)
printf '#!/bin/sh\nexec cat /tmp/out\n' > /bin/send.sh; chmod +x /bin/send.sh
printf '#!/bin/sh\nsha256sum > /tmp/insum\n' > /bin/recv.sh; chmod +x /bin/recv.sh
for r in {rounds}; do
nc -l -p 5${{r}}{n}9 -e /bin/true
echo KNIC_R${{r}}_BEGIN
ip neigh flush dev eth0 2>/dev/null
i=0; until ping -c 1 -W 1 {peer} >/dev/null 2>&1 || [ $i -ge 90 ]; do i=$((i+1)); done
if ping -c 5 -w 30 {peer}; then echo KNIC_R${{r}}_PEER_PING_OK; else echo KNIC_R${{r}}_PEER_PING_FAIL; fi
i=0; until ping -c 1 -W 1 {them} >/dev/null 2>&1 || [ $i -ge 180 ]; do i=$((i+1)); done
if ping -c 5 -w 30 {them}; then echo KNIC_R${{r}}_OTHER_PING_OK; else echo KNIC_R${{r}}_OTHER_PING_FAIL; fi
echo KNIC_R${{r}}_PINGED
nc -l -p 5${{r}}{n}0 -e /bin/true
dd if=/dev/urandom of=/tmp/out bs=1M count={mib} 2>/dev/null
echo KNIC_R${{r}}_OUT_SHA=$(sha256sum /tmp/out | cut -d' ' -f1)
i=0; until nc {peer} 5${{r}}{n}1 -e /bin/send.sh || [ $i -ge 60 ]; do sleep 1; i=$((i+1)); done
echo KNIC_R${{r}}_SENT
rm /tmp/out
echo KNIC_R${{r}}_LISTENING
nc -l -p 5${{r}}{n}2 -e /bin/recv.sh
echo KNIC_R${{r}}_IN_SHA=$(cut -d' ' -f1 /tmp/insum)
echo KNIC_R${{r}}_DONE
done"#,
        me = guest_ip(n),
        gw = gateway_ip(n),
        peer = PEER_IP,
        them = guest_ip(other),
    )
}

/// Guest `n`'s QEMU on port `vm{n}`'s socket, redialling a lost agent.
fn start_guest(initrd: &Path, dir: &Path, n: u8, tso: bool) -> Guest {
    QemuGuest::new(
        initrd,
        &dir.join(format!("vm{n}.sock")),
        &dir.join(format!("console{n}.log")),
    )
    .mac(&format!("52:54:00:4b:00:0{n}"))
    .tso(tso)
    .reconnect(true)
    .spawn()
}

fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap_or_else(|e| panic!("{e}"));
    run(Command::new("chmod").arg("+x").arg(path));
}

/// Connects from the peer to `guest`'s TCP `port` (running `-e what` on the connection)
/// until it succeeds: the guest listens there when it is ready for the next step.
fn peer_nc(topo: &Topology, guest: &str, port: String, what: &Path, purpose: &str) {
    wait_for(purpose, STEP, || {
        topo.peer_ns
            .cmd("busybox")
            .args(["nc", guest, &port, "-e"])
            .arg(what)
            .status()
            .is_ok_and(|s| s.success())
    });
}

/// The console from round `r`'s start on.
fn round_text(g: &Guest, r: usize) -> String {
    let text = g.text();
    let from = text.find(&format!("KNIC_R{r}_BEGIN")).unwrap_or(0);
    text[from..].to_owned()
}

/// One round through an agent with `uplink`: pings, 64 MiB each way checked, offload and
/// copy counters asserted. The guests wait at the round's gate.
fn round(
    r: usize,
    uplink: UplinkKind,
    topo: &Topology,
    dir: &Path,
    guests: &mut [Guest],
    payload: &Path,
) {
    let payload_sha = sha256(payload);
    let started = Instant::now();
    // Port vm3 has no guest: a hostile frontend attacks it in the first round.
    let mut agent = KnicAgent::start(
        &topo.agent_ns,
        dir,
        &Topology::agent_args(uplink, dir, 3, ""),
    );
    let context = || agent.log_text();
    topo.prepare_peer(uplink);
    topo.flush_peer_neighbours();

    // The peer: one listener per guest hashing what arrives.
    let mut listeners = Vec::new();
    for n in 1..=2u8 {
        let recv = dir.join(format!("peer-recv{r}{n}.sh"));
        let sum = dir.join(format!("peer-in{r}{n}.sum"));
        script(&recv, &format!("sha256sum > {}", sum.display()));
        let mut cmd = topo.peer_ns.cmd("busybox");
        cmd.args(["nc", "-l", "-p", &format!("5{r}{n}1"), "-e"])
            .arg(&recv);
        listeners.push((Proc::spawn("busybox nc -l", &mut cmd), sum));
    }
    let go = Path::new("/bin/true");
    // The gate: reached through this agent, so the round's traffic crosses `uplink`.
    for n in 1..=2u8 {
        peer_nc(
            topo,
            &guest_ip(n),
            format!("5{r}{n}9"),
            go,
            &format!("round {r}: the peer to reach guest {n} over {uplink:?}"),
        );
    }
    // Both guests ping before either starts its bulk transfer, so the pings measure the
    // path, not a queue behind 64 MiB; then the test lets each go on.
    for g in guests.iter_mut() {
        g.wait(&format!("KNIC_R{r}_PINGED"), STEP, context);
    }
    for name in ["vm1", "vm2"] {
        let p = agent.port(name);
        assert_eq!(p["guest_connected"], true, "{p}");
        assert_eq!(p["library_carrier"], true, "{p}");
        assert_eq!(p["guest_offloads"]["tso4"], true, "{p}");
    }
    for n in 1..=2u8 {
        peer_nc(
            topo,
            &guest_ip(n),
            format!("5{r}{n}0"),
            go,
            &format!("round {r}: guest {n} to take the go"),
        );
    }
    if r == 1 {
        // While both guests send their 64 MiB, a hostile frontend on vm3 posts the catalogue
        // of bad TX chains: vm3 counts each under its reason, the transfers are unharmed.
        let drops = attack_port(&mut agent, "vm3", &dir.join("vm3.sock"));
        eprintln!("vm3 (hostile) drops: {drops}");
    }
    let context = || agent.log_text();
    for (i, g) in guests.iter_mut().enumerate() {
        g.wait(&format!("KNIC_R{r}_LISTENING"), STEP, context);
        let text = round_text(g, r);
        for what in ["PEER_PING_OK", "OTHER_PING_OK"] {
            let marker = format!("KNIC_R{r}_{what}");
            assert!(
                text.contains(&marker),
                "round {r} guest {}: no {marker}:\n{text}",
                i + 1
            );
        }
        assert_eq!(
            text.matches("5 packets received").count(),
            2,
            "round {r} guest {}: every ping answered:\n{text}",
            i + 1
        );
    }
    // Guest -> peer arrived whole.
    for (i, (l, sum)) in listeners.iter_mut().enumerate() {
        assert!(
            l.stop("-0", STEP),
            "round {r}: the peer's listener {} never ended",
            i + 1
        );
        let got = std::fs::read_to_string(&*sum).unwrap_or_default();
        let sent = guests[i].value(&format!("KNIC_R{r}_OUT_SHA="));
        assert_eq!(
            got.split_whitespace().next(),
            Some(sent.as_str()),
            "round {r}: guest {} -> peer payload over {uplink:?}",
            i + 1
        );
    }
    // Peer -> guest.
    let send = dir.join("peer-send.sh");
    script(&send, &format!("exec cat {}", payload.display()));
    for n in 1..=2u8 {
        peer_nc(
            topo,
            &guest_ip(n),
            format!("5{r}{n}2"),
            &send,
            &format!("round {r}: the peer to send to guest {n}"),
        );
    }
    for (i, g) in guests.iter_mut().enumerate() {
        g.wait(&format!("KNIC_R{r}_DONE"), STEP, context);
        assert_eq!(
            g.value(&format!("KNIC_R{r}_IN_SHA=")),
            payload_sha,
            "round {r}: peer -> guest {} over {uplink:?}",
            i + 1
        );
    }

    let st1 = agent.port_stats("vm1");
    let st2 = agent.port_stats("vm2");
    let up = agent.ctl(&["stats"])["uplinks"][0].clone();
    eprintln!("round {r} ({uplink:?}):\nvm1: {st1}\nvm2: {st2}\nuplink: {up}");
    let large = |st: &serde_json::Value, k: &str| st["library"][k].as_u64().unwrap_or(0);
    eprintln!(
        "round {r} ({uplink:?}): vm1 large frames into the library {}, to the guest {}",
        large(&st1, "rx_large_frames"),
        large(&st1, "tx_large_frames")
    );
    // Over AF_XDP neither has been seen, and why guest 1 sends only MTU-sized segments there
    // is an open question of issue 8 (toward the guest it is expected: the peer's TSO
    // cannot cross AF_XDP, so large frames need the library's GRO to merge, which a copy-
    // mode socket's small batches rarely give it). Asserted over AF_PACKET only.
    if uplink == UplinkKind::Packet {
        // TSO on: the guest's 64 KiB frames entered the library as GSO packets, whole.
        assert!(large(&st1, "rx_large_frames") > 0, "vm1 with TSO: {st1}");
        // The peer's TSO traffic (PACKET_VNET_HDR) reached guest 1 (GUEST_TSO negotiated)
        // as large frames.
        assert!(large(&st1, "tx_large_frames") > 0, "vm1 receiving: {st1}");
    }
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
            eprintln!("round {r} {name} {dir}: {per_frame:.4} copies per frame");
        }
    }
    // The guests' ports count no guest error (the hostile port's reasons stay there); the
    // only drops allowed are the seam's when all its buffers toward the library are in
    // flight (`tx_backend_refused`, each one a `seam.to_stack.full`), which TCP recovers.
    for (name, st) in [("vm1", &st1), ("vm2", &st2)] {
        let drops = st["vhost"][0]["drops"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (reason, n) in &drops {
            let n = n.as_u64().unwrap_or(u64::MAX);
            if reason == "tx_backend_refused" {
                assert_eq!(
                    Some(n),
                    st["seam"]["to_stack"]["full"].as_u64(),
                    "round {r}: {name}'s refusals are the seam's: {st}"
                );
            } else {
                assert_eq!(n, 0, "round {r}: {name} counted {reason}: {st}");
            }
        }
    }
    // Both payloads crossed this round's uplink, each way.
    let up_bytes = |k: &str| up["library"][k].as_u64().unwrap_or(0);
    assert!(up_bytes("rx_bytes") >= 2 * TRANSFER, "uplink rx: {up}");
    assert!(up_bytes("tx_bytes") >= 2 * TRANSFER, "uplink tx: {up}");

    let mut agent = agent;
    assert!(
        agent.proc.stop("-TERM", Duration::from_secs(10)),
        "round {r}: the agent did not stop on SIGTERM:\n{}",
        agent.log_text()
    );
    std::fs::rename(&agent.log, dir.join(format!("knic-agent-round{r}.log")))
        .unwrap_or_else(|e| panic!("keep round {r}'s agent log: {e}"));
    eprintln!(
        "round {r} over {uplink:?}: {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn two_guests_ping_and_move_64_mib_each_way_through_the_library_over_af_packet_and_af_xdp() {
    let _one = serial();
    require_root();
    require_tool("xz");
    let started = Instant::now();
    let (_, modules) = initramfs::cloud_kernel();
    let topo = Topology::new("agq");
    let dir = Scratch::new("agent-qemu");

    let payload = dir.0.join("peer-payload");
    run(Command::new("dd").args([
        "if=/dev/urandom",
        &format!("of={}", payload.display()),
        "bs=1M",
        &format!("count={}", TRANSFER >> 20),
        "status=none",
    ]));
    let mut guests = Vec::new();
    for (n, other, tso) in [(1u8, 2u8, true), (2, 1, false)] {
        let initrd = dir.0.join(format!("initramfs{n}.cpio"));
        initramfs::build(&initrd, &modules, &guest_script(n, other));
        guests.push(start_guest(&initrd, &dir.0, n, tso));
    }
    for (i, uplink) in ROUNDS.into_iter().enumerate() {
        round(i + 1, uplink, &topo, &dir.0, &mut guests, &payload);
    }
    // One boot served every round; the script then powers the guest off.
    for g in &mut guests {
        assert_eq!(
            g.text().matches("Linux version").count(),
            1,
            "the guest rebooted:\n{}",
            g.text()
        );
        assert!(g.vm.stop("-TERM", Duration::from_secs(30)) || !g.running());
    }
    eprintln!(
        "two guests, {} rounds: {:.0} s",
        ROUNDS.len(),
        started.elapsed().as_secs_f64()
    );
}

/// Cycles of the QEMU reattach test (the issue asks for 100).
const REATTACH: usize = 100;
/// Every this many cycles the peer pings the guest, so the data path is cycled too.
const PING_EVERY: usize = 10;

/// One running guest (QEMU redials with `reconnect-ms`); its port is removed and added back
/// through the agent's API 100 times. Each removal closes QEMU's connection and the port's
/// library device; QEMU reconnects to the new port, negotiates again and the guest's link
/// comes back (the guest counts its carrier changes: two per cycle). Then the library's
/// interface list, the agent's fds, threads and RSS are where they were after the warm-up.
#[test]
fn a_qemu_guest_detaches_and_reattaches_100_times_without_leaks() {
    let _one = serial();
    require_root();
    require_tool("xz");
    let started = Instant::now();
    let (_, modules) = initramfs::cloud_kernel();
    let topo = Topology::new("agqr");
    let dir = Scratch::new("agent-qemu-re");
    let agent = KnicAgent::start(
        &topo.agent_ns,
        &dir.0,
        &Topology::agent_args(UplinkKind::Packet, &dir.0, 1, ""),
    );
    let context = || agent.log_text();
    let initrd = dir.0.join("initramfs.cpio");
    initramfs::build(
        &initrd,
        &modules,
        &format!(
            "ip link set eth0 up\nip addr add {}/24 dev eth0\nip route add default via {}\n\
             c0=$(cat /sys/class/net/eth0/carrier_changes)\necho KNIC_UP\n\
             nc -l -p 5999 -e /bin/true\n\
             echo KNIC_CARRIER_CHANGES=$(( $(cat /sys/class/net/eth0/carrier_changes) - c0 ))\n\
             echo KNIC_DONE",
            guest_ip(1),
            gateway_ip(1)
        ),
    );
    let socket = dir.0.join("vm1.sock");
    let mut guest = QemuGuest::new(&initrd, &socket, &dir.0.join("console.log"))
        .reconnect(true)
        .spawn();
    guest.wait("KNIC_UP", STEP, context);
    agent.wait_guest("vm1", true, Duration::from_secs(60));
    topo.peer_ping(&guest_ip(1), 3);
    let booted = started.elapsed();

    let port = format!("vm1={}", socket.display());
    let address = format!("vm1={}/24", gateway_ip(1));
    let cycle = |i: usize| {
        let removed = agent.ctl(&["port", "remove", "vm1"]);
        assert_eq!(removed["removed"], "vm1", "{removed}");
        agent.ctl(&["port", "add", &port]);
        agent.ctl(&["address", "add", &address]);
        agent.wait_guest("vm1", true, Duration::from_secs(30));
        if i % PING_EVERY == 0 {
            topo.peer_ping(&guest_ip(1), 2);
        }
    };
    for i in 0..LEAK_WARMUP {
        cycle(i);
    }
    let links = agent.library_links();
    let start = agent.resources();
    let t0 = Instant::now();
    for i in 0..REATTACH {
        cycle(i);
    }
    let cycles = t0.elapsed();
    let end = agent.resources();
    eprintln!(
        "{REATTACH} QEMU detach/reattach cycles in {:.1} s ({:.2} s each; boot {:.0} s); \
         start {start:?}, end {end:?}",
        cycles.as_secs_f64(),
        cycles.as_secs_f64() / REATTACH as f64,
        booted.as_secs_f64()
    );
    assert_eq!(agent.library_links(), links, "the library's interfaces");
    end.assert_back_to(&start, RSS_SLACK_KIB, "the agent");
    // And the guest really went away and came back each time, never rebooted.
    peer_nc(
        &topo,
        &guest_ip(1),
        "5999".into(),
        Path::new("/bin/true"),
        "the peer to reach the guest after the cycles",
    );
    guest.wait("KNIC_DONE", STEP, context);
    let changes: usize = guest
        .value("KNIC_CARRIER_CHANGES=")
        .parse()
        .unwrap_or_else(|e| panic!("carrier changes: {e}"));
    // Each cycle takes the guest's link down and up, but the driver reads the link state
    // once per configuration interrupt, so a down and an up QEMU signals back to back can
    // reach it as one read of "up" (seen: 204 changes in 103 cycles).
    assert!(
        changes >= LEAK_WARMUP + REATTACH,
        "the guest saw {changes} carrier changes in {} cycles:\n{}",
        LEAK_WARMUP + REATTACH,
        guest.text()
    );
    assert_eq!(guest.text().matches("Linux version").count(), 1, "rebooted");
    eprintln!(
        "QEMU reattach test: {:.0} s",
        started.elapsed().as_secs_f64()
    );
}
