//! A stock guest configures itself from knic-agent's services: Debian's cloud kernel under
//! QEMU 10 (TCG), busybox initramfs, nothing configured by hand. `udhcpc` gets its IPv4
//! address and default route from the agent's DHCP server on port vm1, the kernel's own
//! IPv6 autoconf a SLAAC address and a default route from its router advertisements; then
//! the guest pings its gateway and the peer behind the uplink over both families, and the
//! peer pings the guest at the addresses it was given. The lease is listed by
//! `knicctl leases` and its file. Needs root, QEMU, the cloud kernel, busybox-static and xz
//! (`deploy/dev/setup-debian.sh`) and the workspace's binaries (`cargo build --release -p
//! knic-agent`).

use std::time::Duration;

use guest_tests::agent::{KnicAgent, PEER_IP, Topology, UplinkKind, gateway_ip, guest_ip};
use guest_tests::qemu::QemuGuest;
use guest_tests::{Scratch, initramfs, require_root, require_tool, run, serial, wait_for};

/// Whole-step bound under TCG on a shared 2-core machine.
const STEP: Duration = Duration::from_secs(420);
/// The guest's MAC: QEMU's, and the port's (the DHCP server serves only the port's guest).
const GUEST_MAC: &str = "52:54:00:4b:00:01";
/// Its SLAAC address in the port's prefix (EUI-64 from GUEST_MAC).
const GUEST_V6: &str = "fd00:210:1:0:5054:ff:fe4b:1";
const GATEWAY_V6: &str = "fd00:210:1::1";
const UPLINK_V6: &str = "fd00:210::2";
const PEER_V6: &str = "fd00:210::1";

/// The guest's side: DHCP, wait for SLAAC, print what it got, ping, then stay up for the
/// peer's pings.
fn guest_script() -> String {
    format!(
        r#"{dhcp}{slaac}echo "KNIC_V4 $(ip -f inet addr show dev eth0 | grep inet)"
echo "KNIC_V4_DEFAULT $(ip -f inet route | grep ^default)"
echo "KNIC_V6 $(ip -f inet6 addr show dev eth0 | grep 'inet6 fd00')"
echo "KNIC_V6_DEFAULT $(ip -f inet6 route | grep ^default)"
for t in {gw4} {gw6} {peer4} {peer6}; do
  i=0; until ping -c 1 -W 1 $t >/dev/null 2>&1 || [ $i -ge 60 ]; do i=$((i+1)); done
  if ping -c 3 -w 20 $t >/dev/null; then echo "KNIC_PING_OK $t"; else echo "KNIC_PING_FAIL $t"; fi
done
echo KNIC_PINGED
sleep 600"#,
        gw4 = gateway_ip(1),
        gw6 = GATEWAY_V6,
        peer4 = PEER_IP,
        peer6 = PEER_V6,
        dhcp = initramfs::dhcp_client(),
        slaac = initramfs::wait_for_slaac("fd00:210:1"),
    )
}

fn line<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} on the console:\n{text}"))
}

#[test]
fn a_stock_guest_gets_dhcpv4_and_slaac_from_the_agent_and_pings_both_ways() {
    let _one = serial();
    require_root();
    require_tool("xz");
    let (_, modules) = initramfs::cloud_kernel();
    let topo = Topology::new("agd");
    let dir = Scratch::new("agent-dhcp");
    // The peer reaches the port's IPv6 prefix through the library, as it does IPv4.
    topo.peer_ipv6(PEER_V6, UPLINK_V6, &["fd00:210:1::/64"]);
    let mut args =
        Topology::agent_args(UplinkKind::Packet, &dir.0, 1, &format!(",mac={GUEST_MAC}"));
    args.extend([
        format!("--address=up0={UPLINK_V6}/64"),
        format!("--address=vm1={GATEWAY_V6}/64"),
        format!("--dhcp=vm1,pool={}-10.210.1.20,lease=600", guest_ip(1)),
        "--ra=vm1,interval=4".into(),
        format!("--lease-dir={}", dir.0.join("leases").display()),
    ]);
    let agent = KnicAgent::start(&topo.agent_ns, &dir.0, &args);

    let initrd = dir.0.join("initramfs.cpio");
    initramfs::build(&initrd, &modules, &guest_script());
    let console = dir.0.join("console.log");
    let mut vm = QemuGuest::new(&initrd, &dir.0.join("vm1.sock"), &console)
        .mac(GUEST_MAC)
        .spawn()
        .vm;
    let text = || std::fs::read_to_string(&console).unwrap_or_default();
    wait_for("the guest to print KNIC_PINGED", STEP, || {
        if let Ok(Some(status)) = vm.child.try_wait() {
            panic!(
                "QEMU exited ({status}):\n{}\nagent:\n{}",
                text(),
                agent.log_text()
            );
        }
        text().contains("KNIC_PINGED")
    });
    let out = text();
    assert!(
        out.contains("KNIC_DHCP_OK"),
        "udhcpc got a lease:\n{out}\nagent:\n{}",
        agent.log_text()
    );
    let lease = line(&out, "KNIC_LEASE ");
    assert!(
        lease.contains(&format!("ip={}", guest_ip(1)))
            && lease.contains("mask=24")
            && lease.contains(&format!("router={}", gateway_ip(1)))
            && lease.contains("lease=600"),
        "{lease}"
    );
    assert!(
        line(&out, "KNIC_V4 ").contains(&format!("{}/24", guest_ip(1))),
        "{out}"
    );
    assert!(
        line(&out, "KNIC_V4_DEFAULT ").contains(&gateway_ip(1)),
        "{out}"
    );
    assert!(
        line(&out, "KNIC_V6 ").contains(GUEST_V6),
        "a SLAAC address from the RA's prefix:\n{out}"
    );
    assert!(
        line(&out, "KNIC_V6_DEFAULT ").contains("via fe80::"),
        "a default route from the RA:\n{out}"
    );
    for t in [gateway_ip(1).as_str(), GATEWAY_V6, PEER_IP, PEER_V6] {
        assert!(
            out.contains(&format!("KNIC_PING_OK {t}")),
            "guest -> {t}:\n{out}"
        );
    }
    // And the peer reaches the guest at the addresses the services gave it.
    for t in [guest_ip(1).as_str(), GUEST_V6] {
        let o = run(topo
            .peer_ns
            .cmd("ping")
            .args(["-c", "3", "-W", "10", "-w", "30", t]));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("3 received"),
            "peer -> {t}"
        );
    }

    let leases = agent.ctl(&["leases"]);
    let l = &leases[0];
    assert_eq!(
        (l["device"].as_str(), l["mac"].as_str(), l["state"].as_str()),
        (Some("vm1"), Some(GUEST_MAC), Some("bound")),
        "{leases}"
    );
    assert_eq!(l["ip"].as_str(), Some(guest_ip(1).as_str()));
    let file = std::fs::read_to_string(dir.0.join("leases/vm1.json")).unwrap_or_default();
    assert!(
        file.contains(GUEST_MAC) && file.contains(&guest_ip(1)),
        "{file}"
    );
    let stats = agent.ctl(&["stats"]);
    eprintln!("services: dhcp {} ra {}", stats["dhcp"], stats["ra"]);
    assert_eq!(
        stats["dhcp"][0]["drops"],
        serde_json::json!({}),
        "an honest guest's DHCP is never dropped"
    );
    assert!(
        stats["ra"][0]["sent_solicited"].as_u64().unwrap_or(0)
            + stats["ra"][0]["sent_unsolicited"].as_u64().unwrap_or(0)
            > 0
    );
    assert!(vm.stop("-TERM", Duration::from_secs(30)));
}
