//! Jumbo frames end to end: a stock guest (Debian's cloud kernel under QEMU 10 TCG,
//! busybox initramfs) behind a knic-agent port with MTU 9000, an AF_PACKET uplink with
//! MTU 9000 on a veth whose two ends have MTU 9000, and a peer in its namespace.
//!
//! * The guest takes its MTU from the agent's DHCP server (option 26) and its IPv6 link
//!   MTU from the router advertisement's MTU option, and prints both.
//! * The peer pings the guest with 9000-byte IPv4 and IPv6 packets and the don't-fragment
//!   bit (`ping -M do`): a hop with a smaller MTU anywhere (the uplink device, the library's
//!   routing, the port device, the vhost port) would answer "fragmentation needed" (or
//!   "packet too big") or drop them, and the ping would fail.
//! * The guest pings the peer with 9000-byte packets and fetches a 4 MiB file from an HTTP
//!   server in the peer's namespace (SHA-256 compared): a TCP connection whose MSS both
//!   ends derive from MTU 9000.
//! * Nothing was fragmented on the way: the peer's kernel reassembled no datagram
//!   (`Ip: ReasmReqds` of its namespace's `/proc/net/snmp`).
//!
//! Needs root, QEMU, the cloud kernel, busybox-static, xz, iputils `ping` and sha256sum
//! (`deploy/dev/setup-debian.sh`), and the workspace's binaries (`cargo build --release
//! -p knic-agent`).

use std::time::Duration;

use guest_tests::agent::{KnicAgent, PEER_IP, Topology, UplinkKind, guest_ip};
use guest_tests::qemu::QemuGuest;
use guest_tests::{Scratch, initramfs, require_root, require_tool, run, serial};

/// Whole-step bound under TCG on a shared 2-core machine.
const STEP: Duration = Duration::from_secs(420);
const MTU: u32 = 9000;
/// ICMP payload that fills an MTU-sized IPv4 packet (20 bytes of IP, 8 of ICMP header),
/// and an IPv6 one (40 + 8).
const PING4_PAYLOAD: u32 = MTU - 28;
const PING6_PAYLOAD: u32 = MTU - 48;
const GUEST_MAC: &str = "52:54:00:4b:90:01";
/// Its SLAAC address in the port's prefix (EUI-64 from GUEST_MAC).
const GUEST_V6: &str = "fd00:290:1:0:5054:ff:fe4b:9001";
const GATEWAY_V6: &str = "fd00:290:1::1";
const UPLINK_V6: &str = "fd00:290::2";
const PEER_V6: &str = "fd00:290::1";
const PEER_HTTP_PORT: u16 = 8080;
const FILE_BYTES: usize = 4 << 20;

/// DHCP (the client script applies the offered MTU, as Debian's does), wait for SLAAC,
/// jumbo pings and the fetch, then stay up for the peer's pings.
fn guest_script() -> String {
    format!(
        r#"{dhcp}{slaac}echo "KNIC_LINK_MTU $(cat /sys/class/net/eth0/mtu)"
echo "KNIC_V6_MTU $(cat /proc/sys/net/ipv6/conf/eth0/mtu)"
for t in {peer4} {peer6}; do
  i=0; until ping -c 1 -W 1 $t >/dev/null 2>&1 || [ $i -ge 60 ]; do i=$((i+1)); done
done
if ping -c 3 -w 20 -s {p4} {peer4} >/dev/null; then echo KNIC_JUMBO4 up; else echo KNIC_JUMBO4 FAIL; fi
if ping -c 3 -w 20 -s {p6} {peer6} >/dev/null; then echo KNIC_JUMBO6 up; else echo KNIC_JUMBO6 FAIL; fi
if timeout 120 wget -q -O /tmp/file http://{peer4}:{port}/file; then echo "KNIC_FILE $(sha256sum /tmp/file | cut -d' ' -f1)"; else echo KNIC_FILE FAIL; fi
echo KNIC_READY
sleep 600"#,
        peer4 = PEER_IP,
        peer6 = PEER_V6,
        p4 = PING4_PAYLOAD,
        p6 = PING6_PAYLOAD,
        port = PEER_HTTP_PORT,
        dhcp = initramfs::dhcp_client(),
        slaac = initramfs::wait_for_slaac("fd00:290:1"),
    )
}

/// The peer namespace's `Ip: ReasmReqds`: datagrams its kernel had to reassemble.
fn peer_reassemblies(topo: &Topology) -> u64 {
    let out = run(topo.peer_ns.cmd("cat").arg("/proc/net/snmp"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut ip = text.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (ip.next().unwrap_or(""), ip.next().unwrap_or(""));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ReasmReqds")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no Ip ReasmReqds in the peer's /proc/net/snmp:\n{text}"))
}

#[test]
fn jumbo_frames_cross_guest_port_library_and_uplink_unfragmented_both_ways() {
    let _one = serial();
    require_root();
    require_tool("xz");
    let ping = require_tool("ping");
    let (_, modules) = initramfs::cloud_kernel();
    let topo = Topology::new("agj");
    topo.prepare_peer(UplinkKind::Packet);
    for (ns, veth) in [(&topo.agent_ns, "kga"), (&topo.peer_ns, "kgb")] {
        run(ns
            .cmd("ip")
            .args(["link", "set", veth, "mtu", &MTU.to_string()]));
    }
    topo.peer_ipv6(PEER_V6, UPLINK_V6, &["fd00:290:1::/64"]);
    let dir = Scratch::new("agent-jumbo");
    let (_httpd, digest) = topo.peer_http(&dir.0, PEER_HTTP_PORT, FILE_BYTES);
    let reassembled_before = peer_reassemblies(&topo);

    let mut args = Topology::agent_args(
        UplinkKind::Packet,
        &dir.0,
        1,
        &format!(",mac={GUEST_MAC},mtu={MTU}"),
    );
    for a in args.iter_mut().filter(|a| a.starts_with("--uplink=")) {
        a.push_str(&format!(",mtu={MTU}"));
    }
    args.extend([
        format!("--address=up0={UPLINK_V6}/64"),
        format!("--address=vm1={GATEWAY_V6}/64"),
        format!("--dhcp=vm1,pool={0}-{0},mtu={MTU}", guest_ip(1)),
        format!("--ra=vm1,interval=4,mtu={MTU}"),
        format!("--lease-dir={}", dir.0.join("leases").display()),
    ]);
    let agent = KnicAgent::start(&topo.agent_ns, &dir.0, &args);
    let links = agent.ctl(&["links"]);
    eprintln!("library links: {links}");

    let initrd = dir.0.join("initramfs.cpio");
    initramfs::build(&initrd, &modules, &guest_script());
    let mut vm = QemuGuest::new(&initrd, &dir.0.join("vm1.sock"), &dir.0.join("console.log"))
        .mac(GUEST_MAC)
        .spawn();
    let text = vm.wait("KNIC_READY", STEP, || agent.log_text());
    assert!(text.contains("KNIC_DHCP_OK"), "DHCP:\n{text}");
    assert!(
        vm.value("KNIC_LEASE ").contains(&format!("mtu={MTU}")),
        "the DHCP server offers the port's MTU:\n{text}"
    );
    assert_eq!(vm.value("KNIC_LINK_MTU "), MTU.to_string(), "{text}");
    assert_eq!(
        vm.value("KNIC_V6_MTU "),
        MTU.to_string(),
        "the RA's MTU:\n{text}"
    );
    assert_eq!(vm.value("KNIC_JUMBO4 "), "up", "guest -> peer:\n{text}");
    assert_eq!(vm.value("KNIC_JUMBO6 "), "up", "guest -> peer:\n{text}");
    assert_eq!(vm.value("KNIC_FILE "), digest, "the peer's file:\n{text}");

    // Peer -> guest with don't-fragment: every hop carries 9000 bytes or the ping fails.
    for (target, payload) in [
        (guest_ip(1), PING4_PAYLOAD),
        (GUEST_V6.to_owned(), PING6_PAYLOAD),
    ] {
        let out = topo
            .peer_ns
            .cmd(&ping)
            .args(["-M", "do", "-s", &payload.to_string()])
            .args(["-c", "3", "-W", "10", "-w", "30", &target])
            .output()
            .unwrap_or_else(|e| panic!("run ping: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(" 0% packet loss"),
            "peer -> {target}, {payload} bytes, don't fragment:\n{stdout}{}\nagent stats: {}",
            String::from_utf8_lossy(&out.stderr),
            agent.port_stats("vm1")
        );
    }
    assert_eq!(
        peer_reassemblies(&topo),
        reassembled_before,
        "the peer reassembled fragments: some hop's MTU is below {MTU}"
    );
    let st = agent.port_stats("vm1");
    assert_eq!(
        st["library"]["drops"],
        serde_json::json!({}),
        "the port's library device dropped frames: {st}"
    );
    assert!(vm.vm.stop("-TERM", Duration::from_secs(30)));
}
