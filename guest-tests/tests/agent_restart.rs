//! Restart without loss: a real Linux guest (Debian's cloud kernel under QEMU 10 TCG,
//! busybox initramfs) behind knic-agent sends a payload over TCP to a peer namespace
//! behind the agent's AF_PACKET uplink, and the agent is killed with SIGKILL in the middle
//! of the transfer, 20 times in a row, each time restarted with the same flags and state
//! directory. The guest boots once: QEMU (`reconnect-ms`) redials the port's socket, the
//! guest never reboots, and each transfer completes on **the same TCP connection** it
//! started on, SHA-256 compared at the peer.
//!
//! Why the same connection survives: the TCP endpoints are the guest's kernel and the
//! peer's; the library kernel only routes between them (no NAT, so no conntrack state that
//! dies with the process). What a restart must bring back is the routing: the port, the
//! uplink, their addresses, the route to the peer's second network, which is added through
//! the control API in the first run only, so it exists after a restart only if the state
//! file (`--state-dir`) brought it back, and the same library MACs (so neither the guest's
//! nor the peer's neighbour entries go stale). Segments lost while no agent runs are
//! retransmitted by the guest and the peer.
//!
//! The guest's address comes from the agent's DHCP server once, at boot; after every
//! restart `knicctl leases` still lists it (the lease file is reloaded), and the number of
//! leases stays one. Needs root, QEMU, the cloud kernel, busybox-static, xz and sha256sum
//! (`deploy/dev/setup-debian.sh`), and the workspace's binaries (`cargo build --release
//! -p knic-agent`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use guest_tests::agent::{KnicAgent, PEER_IP, Topology, UplinkKind, gateway_ip, guest_ip};
use guest_tests::qemu::QemuGuest;
use guest_tests::{
    Proc, Scratch, initramfs, require_root, require_tool, run, serial, sha256, wait_for,
};

/// SIGKILLs, each in the middle of its own transfer.
const KILLS: usize = 20;
/// Bytes per transfer: long enough under TCG that the kill lands mid-transfer.
const PAYLOAD_MIB: u64 = 24;
/// The kill comes once the peer has this much of the transfer, and never after its end.
const KILL_AFTER: u64 = 1 << 20;
/// Bound for one boot, one DHCP exchange or one transfer under TCG on a loaded machine.
const STEP: Duration = Duration::from_secs(300);
/// The whole test's bound (CI's budget is 90 minutes for everything).
const WHOLE: Duration = Duration::from_secs(25 * 60);
const GUEST_MAC: &str = "52:54:00:4b:00:09";
/// The peer's second network, reached through a route the API adds (state-file only).
const REMOTE_IP: &str = "10.211.0.1";
const REMOTE_NET: &str = "10.211.0.0/24";
/// The guest's gate (the test lets each transfer start) and the peer's receiving port.
const GATE_PORT: u16 = 6000;
const DATA_PORT: u16 = 6001;

fn guest_script() -> String {
    format!(
        r#"printf '#!/bin/sh\nexec cat /tmp/out\n' > /bin/send.sh; chmod +x /bin/send.sh
{dhcp}dd if=/dev/urandom of=/tmp/out bs=1M count={PAYLOAD_MIB} 2>/dev/null
echo KNIC_OUT_SHA=$(sha256sum /tmp/out | cut -d' ' -f1)
r=1
while [ $r -le {KILLS} ]; do
  nc -l -p {GATE_PORT} -e /bin/true
  echo KNIC_R${{r}}_GO
  i=0; until nc {REMOTE_IP} {DATA_PORT} -e /bin/send.sh || [ $i -ge 60 ]; do echo KNIC_R${{r}}_RETRY; sleep 1; i=$((i+1)); done
  echo KNIC_R${{r}}_SENT
  r=$((r+1))
done
echo KNIC_ALL_SENT
sleep 3600"#,
        dhcp = initramfs::dhcp_client(),
    )
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// The agent's flags: the same for every start.
fn agent_args(dir: &Path) -> Vec<String> {
    let mut args = Topology::agent_args(UplinkKind::Packet, dir, 1, &format!(",mac={GUEST_MAC}"));
    args.extend([
        format!("--dhcp=vm1,pool={}-10.210.1.20,lease=600", guest_ip(1)),
        format!("--lease-dir={}", dir.join("leases").display()),
        format!("--state-dir={}", dir.join("state").display()),
        "--no-offload".into(),
    ]);
    args
}

/// The one lease: the guest's MAC at its address, bound.
fn assert_one_lease(agent: &KnicAgent, when: &str) {
    let leases = agent.ctl(&["leases"]);
    let list = leases.as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), 1, "{when}: {leases}");
    let l = &list[0];
    assert_eq!(
        (l["mac"].as_str(), l["ip"].as_str(), l["state"].as_str()),
        (Some(GUEST_MAC), Some(guest_ip(1).as_str()), Some("bound")),
        "{when}: {leases}"
    );
}

/// The peer's listener for one transfer, writing what arrives to `file`.
fn peer_listener(topo: &Topology, dir: &Path, r: usize) -> (Proc, PathBuf) {
    let file = dir.join(format!("peer-in{r}"));
    let recv = dir.join(format!("peer-recv{r}.sh"));
    std::fs::write(&recv, format!("#!/bin/sh\nexec cat > {}\n", file.display()))
        .unwrap_or_else(|e| panic!("{e}"));
    run(Command::new("chmod").arg("+x").arg(&recv));
    let mut cmd = topo.peer_ns.cmd("busybox");
    cmd.args(["nc", "-l", "-p", &DATA_PORT.to_string(), "-e"])
        .arg(&recv);
    (Proc::spawn("busybox nc -l", &mut cmd), file)
}

#[test]
fn kill_9_of_the_agent_mid_transfer_20_times_the_guest_reconnects_and_every_transfer_completes() {
    let _one = serial();
    require_root();
    require_tool("xz");
    let started = Instant::now();
    let (_, modules) = initramfs::cloud_kernel();
    let topo = Topology::new("restart");
    topo.prepare_peer(UplinkKind::Packet);
    run(topo
        .peer_ns
        .cmd("ip")
        .args(["addr", "add", &format!("{REMOTE_IP}/24"), "dev", "kgb"]));
    let dir = Scratch::new("agent-restart");
    let args = agent_args(&dir.0);
    let mut agent = KnicAgent::start(&topo.agent_ns, &dir.0, &args);
    // Only through the API: after a restart it exists only if the state file has it.
    agent.ctl(&["route", "add", &format!("{REMOTE_NET},via={PEER_IP}")]);

    let initrd = dir.0.join("initramfs.cpio");
    initramfs::build(&initrd, &modules, &guest_script());
    let mut guest = QemuGuest::new(&initrd, &dir.0.join("vm1.sock"), &dir.0.join("console.log"))
        .mac(GUEST_MAC)
        .reconnect(true)
        .spawn();
    guest.wait("KNIC_OUT_SHA=", STEP, || agent.log_text());
    let text = guest.text();
    assert!(text.contains("KNIC_DHCP_OK"), "{text}");
    assert!(
        text.contains(&format!(
            "KNIC_LEASE ip={} mask=24 router={} ",
            guest_ip(1),
            gateway_ip(1)
        )),
        "{text}"
    );
    let sent_sha = guest.value("KNIC_OUT_SHA=");
    assert_one_lease(&agent, "after boot");
    let port = agent.port("vm1");
    let macs = (port["guest_mac"].clone(), port["library_mac"].clone());

    let mut outages = Vec::new();
    for r in 1..=KILLS {
        assert!(
            started.elapsed() < WHOLE,
            "round {r}: over the test's {WHOLE:?} budget"
        );
        let (mut listener, file) = peer_listener(&topo, &dir.0, r);
        // The gate: the guest starts its transfer once the peer reaches it.
        let gate = || {
            topo.peer_ns
                .cmd("busybox")
                .args([
                    "nc",
                    &guest_ip(1),
                    &GATE_PORT.to_string(),
                    "-e",
                    "/bin/true",
                ])
                .status()
                .is_ok_and(|s| s.success())
        };
        wait_for(&format!("round {r}: the guest's gate"), STEP, gate);
        wait_for(
            &format!("round {r}: {KILL_AFTER} bytes at the peer"),
            STEP,
            || size(&file) >= KILL_AFTER,
        );
        assert!(
            agent.proc.stop("-KILL", Duration::from_secs(10)),
            "round {r}: SIGKILL"
        );
        let at_kill = size(&file);
        let killed = Instant::now();
        let total = PAYLOAD_MIB << 20;
        assert!(
            at_kill < total && matches!(listener.child.try_wait(), Ok(None)),
            "round {r}: the transfer ended before the kill ({at_kill} bytes); raise PAYLOAD_MIB"
        );
        let log = std::fs::read_to_string(&agent.log).unwrap_or_default();
        std::fs::write(dir.0.join(format!("knic-agent-{r}.log")), log)
            .unwrap_or_else(|e| panic!("{e}"));
        agent = KnicAgent::start(&topo.agent_ns, &dir.0, &args);
        // Same port, same MACs, the API's route back, the lease still there.
        let port = agent.port("vm1");
        assert_eq!(
            (port["guest_mac"].clone(), port["library_mac"].clone()),
            macs,
            "round {r}: {port}"
        );
        let routes = agent.ctl(&["route", "list"]);
        assert!(
            routes
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["destination"] == REMOTE_NET)),
            "round {r}: the API's route came back from the state file: {routes}"
        );
        assert_one_lease(&agent, &format!("round {r}, after the restart"));
        agent.wait_guest("vm1", true, STEP);
        let reconnected = killed.elapsed();
        assert!(guest.running(), "round {r}: QEMU exited:\n{}", guest.text());
        assert!(
            listener.stop("-0", STEP),
            "round {r}: the transfer never ended ({} of {total} bytes):\n{}",
            size(&file),
            agent.log_text()
        );
        let resumed = killed.elapsed();
        assert_eq!(size(&file), total, "round {r}: bytes at the peer");
        assert_eq!(sha256(&file), sent_sha, "round {r}: payload at the peer");
        guest.wait(&format!("KNIC_R{r}_SENT"), STEP, || agent.log_text());
        let text = guest.text();
        assert!(
            !text.contains(&format!("KNIC_R{r}_RETRY")),
            "round {r}: one connection carried the whole transfer (nc never had to retry):\n{text}"
        );
        std::fs::remove_file(&file).unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "round {r}: killed at {at_kill} bytes, guest reconnected after {:.1} s, transfer done {:.1} s after the kill",
            reconnected.as_secs_f64(),
            resumed.as_secs_f64()
        );
        outages.push(resumed.as_secs_f64());
    }
    guest.wait("KNIC_ALL_SENT", STEP, || agent.log_text());
    assert_eq!(
        guest.text().matches("Linux version").count(),
        1,
        "the guest booted once:\n{}",
        guest.text()
    );
    assert_one_lease(&agent, "at the end");
    outages.sort_by(f64::total_cmp);
    eprintln!(
        "{KILLS} kills in {:.0} s; kill to transfer end: median {:.1} s, max {:.1} s",
        started.elapsed().as_secs_f64(),
        outages[outages.len() / 2],
        outages[outages.len() - 1]
    );
    assert!(guest.vm.stop("-TERM", Duration::from_secs(30)));
}
