//! Anti-spoofing with a real guest (Debian's cloud kernel under QEMU 10 TCG, busybox
//! initramfs) on a port of tenant `blue`, whose only addresses are 10.212.0.10 and
//! fd00:212::10 and whose MAC is the port's. The guest first pings its gateway (the library
//! kernel, inside the tenant's VRF) honestly over both families; then it forges, in turn,
//! its IPv4 source (`ping -I` from an address it added itself), its IPv6 source, and its
//! source MAC (`ip link set eth0 address`); then it is honest again. Every forged ping gets
//! no answer and each forgery is counted under its own reason for that port
//! (`knicctl antispoof`: `ipv4_source`, `ipv6_source`, `source_mac`); the honest pings
//! before and after all answer, and while the guest is honest nothing is dropped.
//!
//! A test of its own (not inside agent_dhcp or agent_qemu): the rules apply to ports of a
//! tenant, which those tests' ports are not, and a separate boot keeps each test's failure
//! its own. Needs root, QEMU, the cloud kernel, busybox-static and xz
//! (`deploy/dev/setup-debian.sh`), and the workspace's binaries (`cargo build --release -p
//! knic-agent`).

use std::path::Path;
use std::time::Duration;

use guest_tests::agent::KnicAgent;
use guest_tests::qemu::{Guest, QemuGuest};
use guest_tests::{NetNs, Scratch, initramfs, require_root, require_tool, serial};
use serde_json::Value;

/// Bound for a boot or one phase under TCG on a loaded machine.
const STEP: Duration = Duration::from_secs(300);
const GUEST_MAC: &str = "52:54:00:4b:02:12";
const FORGED_MAC: &str = "52:54:00:4b:02:99";
const GUEST_V4: &str = "10.212.0.10";
const GATEWAY_V4: &str = "10.212.0.1";
const FORGED_V4: &str = "10.212.0.99";
const GUEST_V6: &str = "fd00:212::10";
const GATEWAY_V6: &str = "fd00:212::1";
const FORGED_V6: &str = "fd00:212::99";
/// Pings per phase and target.
const PINGS: u32 = 5;
/// The guest pauses this long after each phase's marker, while the test reads the
/// counters (the host has no way into the tenant's subnet to open a gate instead).
const PAUSE_S: u32 = 15;

fn config(dir: &Path) -> String {
    format!(
        r#"
[[tenant]]
name = "blue"
subnet = [{{ prefix = "10.212.0.0/24", gateway = "{GATEWAY_V4}" }}, {{ prefix = "fd00:212::/64", gateway = "{GATEWAY_V6}" }}]

[[port]]
name = "vm1"
socket = "{sock}"
tenant = "blue"
mac = "{GUEST_MAC}"
addresses = ["{GUEST_V4}", "{GUEST_V6}"]
"#,
        sock = dir.join("vm1.sock").display()
    )
}

/// `ping` of `to` (from `from` if given), `$1` the marker: prints `KNIC_<marker> <received>`.
fn guest_script() -> String {
    format!(
        r#"cat > /bin/pings.sh <<'EOF'
#!/bin/sh
marker=$1; to=$2; shift 2
n=$(ping -c {PINGS} -W 2 "$@" $to 2>/dev/null | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')
echo "KNIC_$marker ${{n:-0}}"
EOF
chmod +x /bin/pings.sh
ip link set eth0 up
ip addr add {GUEST_V4}/24 dev eth0
ip -6 addr add {GUEST_V6}/64 dev eth0
i=0; until ping -c 1 -W 1 {GATEWAY_V4} >/dev/null 2>&1 || [ $i -ge 120 ]; do i=$((i+1)); done
i=0; until ping -c 1 -W 1 {GATEWAY_V6} >/dev/null 2>&1 || [ $i -ge 60 ]; do i=$((i+1)); done
pings.sh HONEST4_BEFORE {GATEWAY_V4}
pings.sh HONEST6_BEFORE {GATEWAY_V6}
echo KNIC_PHASE1
sleep {PAUSE_S}
ip addr add {FORGED_V4}/32 dev eth0
pings.sh FORGED4 {GATEWAY_V4} -I {FORGED_V4}
ip addr del {FORGED_V4}/32 dev eth0
ip -6 addr add {FORGED_V6}/128 dev eth0
i=0; until ! ip -6 addr show dev eth0 | grep -q tentative || [ $i -ge 20 ]; do sleep 1; i=$((i+1)); done
pings.sh FORGED6 {GATEWAY_V6} -I {FORGED_V6}
ip -6 addr del {FORGED_V6}/128 dev eth0
ip link set eth0 address {FORGED_MAC}
pings.sh FORGED_MAC {GATEWAY_V4}
ip link set eth0 address {GUEST_MAC}
echo KNIC_PHASE2
sleep {PAUSE_S}
i=0; until ping -c 1 -W 1 {GATEWAY_V4} >/dev/null 2>&1 || [ $i -ge 30 ]; do i=$((i+1)); done
pings.sh HONEST4_AFTER {GATEWAY_V4}
pings.sh HONEST6_AFTER {GATEWAY_V6}
echo KNIC_PHASE3
sleep 3600"#
    )
}

/// vm1's anti-spoofing drops, reason → packets.
fn drops(agent: &KnicAgent) -> Value {
    let v = agent.ctl(&["antispoof"]);
    v.as_array()
        .and_then(|a| a.iter().find(|p| p["port"] == "vm1"))
        .map(|p| p["drops"].clone())
        .unwrap_or_else(|| panic!("no anti-spoofing counters for vm1: {v}"))
}

fn packets(drops: &Value, reason: &str) -> u64 {
    drops[reason]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {reason}: {drops}"))
}

/// Packets vm1's library device took from the guest.
fn rx_packets(agent: &KnicAgent) -> u64 {
    agent.port_stats("vm1")["library"]["rx_packets"]
        .as_u64()
        .unwrap_or(0)
}

/// What the guest printed as `KNIC_<marker> N`.
fn received(guest: &Guest, marker: &str) -> u32 {
    guest
        .value(&format!("KNIC_{marker} "))
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("KNIC_{marker} is not a count:\n{}", guest.text()))
}

#[test]
fn a_guest_that_forges_its_mac_ipv4_or_ipv6_source_is_dropped_and_counted_honest_traffic_flows() {
    let _one = serial();
    require_root();
    require_tool("xz");
    let (_, modules) = initramfs::cloud_kernel();
    let ns = NetNs::new("restart-forge");
    let dir = Scratch::new("agent-forging");
    let file = dir.0.join("agent.toml");
    std::fs::write(&file, config(&dir.0)).unwrap_or_else(|e| panic!("{e}"));
    let agent = KnicAgent::start(
        &ns,
        &dir.0,
        &[
            format!("--config={}", file.display()),
            "--no-offload".into(),
        ],
    );
    let initrd = dir.0.join("initramfs.cpio");
    initramfs::build(&initrd, &modules, &guest_script());
    let mut guest = QemuGuest::new(&initrd, &dir.0.join("vm1.sock"), &dir.0.join("console.log"))
        .mac(GUEST_MAC)
        .spawn();

    // Honest: every ping answered, nothing dropped.
    guest.wait("KNIC_PHASE1", STEP, || agent.log_text());
    let honest = drops(&agent);
    let rx_honest = rx_packets(&agent);
    eprintln!("after the honest phase: {honest}");
    for marker in ["HONEST4_BEFORE", "HONEST6_BEFORE"] {
        assert_eq!(
            received(&guest, marker),
            PINGS,
            "{marker}:\n{}",
            guest.text()
        );
    }
    for reason in [
        "source_mac",
        "arp_source",
        "ipv4_source",
        "ipv6_source",
        "ethertype",
    ] {
        assert_eq!(packets(&honest, reason), 0, "an honest guest: {honest}");
    }

    // Forged: no answer, each counted under its reason.
    guest.wait("KNIC_PHASE2", STEP, || agent.log_text());
    let forged = drops(&agent);
    eprintln!("after the forging phase: {forged}");
    for marker in ["FORGED4", "FORGED6", "FORGED_MAC"] {
        assert_eq!(received(&guest, marker), 0, "{marker}:\n{}", guest.text());
    }
    for reason in ["ipv4_source", "ipv6_source", "source_mac"] {
        // Every forged echo request (and any neighbour message sent from the forged
        // source or MAC) is dropped at the port's ingress.
        assert!(
            packets(&forged, reason) >= u64::from(PINGS),
            "forged {reason}: each of the {PINGS} pings counted: {forged}"
        );
    }
    assert_eq!(packets(&forged, "ethertype"), 0, "{forged}");

    // Honest again: answered, and the counters stand still.
    guest.wait("KNIC_PHASE3", STEP, || agent.log_text());
    let after = drops(&agent);
    let rx_after = rx_packets(&agent);
    for marker in ["HONEST4_AFTER", "HONEST6_AFTER"] {
        assert_eq!(
            received(&guest, marker),
            PINGS,
            "{marker}:\n{}",
            guest.text()
        );
    }
    assert_eq!(
        after, forged,
        "nothing dropped while the guest is honest again"
    );
    assert!(
        rx_after >= rx_honest + 2 * u64::from(PINGS),
        "the honest pings entered the library: {rx_honest} -> {rx_after}"
    );
    assert!(guest.vm.stop("-TERM", Duration::from_secs(30)));
}
