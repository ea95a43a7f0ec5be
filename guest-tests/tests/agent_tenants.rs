//! Tenants with stock guests: three QEMU 10 (TCG) guests, Debian's cloud kernel and a
//! busybox initramfs, configured by nothing but the agent's services. Tenant `blue` has
//! guests vm1 and vm2, tenant `red` guest vm3; both tenants use the IPv4 subnet
//! 10.213.0.0/24 and masquerade to the one uplink, and vm3 is given vm2's address.
//!
//! * Every guest gets its IPv4 address and default route by DHCP (`udhcpc`) and an IPv6
//!   address and default route by SLAAC from the agent's router advertisements.
//! * vm1 and vm2 fetch each other's name over HTTP (busybox `httpd` in each guest) over
//!   IPv4 and IPv6, ping the peer behind the uplink over both families, and fetch a file
//!   from an HTTP server in the peer's namespace. The peer has no route to 10.213.0.0/24,
//!   so the IPv4 fetch completes only through SNAT.
//! * vm3 starts once blue is up: it reaches its own gateway and the peer (the file too,
//!   through its own tenant's SNAT), but never blue's vm1, over either family.
//! * While vm3 holds 10.213.0.20 in red, vm1's fetches of 10.213.0.20 still reach vm2.
//!
//! Needs root, QEMU, the cloud kernel, busybox-static and xz (`deploy/dev/setup-debian.sh`)
//! and the workspace's binaries (`cargo build --release -p knic-agent`).

use std::path::Path;
use std::time::Duration;

use guest_tests::agent::{KnicAgent, PEER_IP, Topology, UPLINK_IP, UplinkKind};
use guest_tests::qemu::{Guest, QemuGuest};
use guest_tests::{Scratch, initramfs, require_root, require_tool, serial, wait_for};

/// Bound for three TCG boots and their checks on a shared 2-core machine.
const STEP: Duration = Duration::from_secs(600);
const PEER_V6: &str = "fd00:213::1";
const UPLINK_V6: &str = "fd00:213::2";
/// The peer's HTTP server, and the size of the file it serves.
const PEER_HTTP_PORT: u16 = 8080;
const FILE_BYTES: usize = 1 << 20;
/// Attempts at a check that must succeed once the other side is up (about a second each).
const TRIES: u32 = 120;
/// Attempts at each check that must never succeed.
const NEGATIVE_TRIES: u32 = 5;

/// One guest: its port, tenant, MAC, the IPv4 address its DHCP server leases (the pool
/// is that one address) and its SLAAC address (EUI-64 of the MAC in the tenant's /64).
struct Vm {
    name: &'static str,
    tenant: &'static str,
    mac: &'static str,
    v4: &'static str,
    v6: &'static str,
}

const VM1: Vm = Vm {
    name: "vm1",
    tenant: "blue",
    mac: "52:54:00:4b:13:01",
    v4: "10.213.0.10",
    v6: "fd00:213:1:0:5054:ff:fe4b:1301",
};
const VM2: Vm = Vm {
    name: "vm2",
    tenant: "blue",
    mac: "52:54:00:4b:13:02",
    v4: "10.213.0.20",
    v6: "fd00:213:1:0:5054:ff:fe4b:1302",
};
/// Red's guest: blue's subnet, vm2's IPv4 address; its own IPv6 prefix (IPv6 is not
/// NATed, so two tenants behind one uplink cannot share one).
const VM3: Vm = Vm {
    name: "vm3",
    tenant: "red",
    mac: "52:54:00:4b:13:03",
    v4: "10.213.0.20",
    v6: "fd00:213:2:0:5054:ff:fe4b:1303",
};
const GATEWAY_V4: &str = "10.213.0.1";

fn gateway_v6(vm: &Vm) -> &'static str {
    if vm.tenant == "blue" {
        "fd00:213:1::1"
    } else {
        "fd00:213:2::1"
    }
}

fn config(dir: &Path) -> String {
    let port = |vm: &Vm| {
        format!(
            "[[port]]\nname = \"{}\"\nsocket = \"{}\"\ntenant = \"{}\"\nmac = \"{}\"\n\
             addresses = [\"{}\"]\n\n",
            vm.name,
            dir.join(format!("{}.sock", vm.name)).display(),
            vm.tenant,
            vm.mac,
            vm.v4
        )
    };
    let dhcp = |vm: &Vm| {
        format!(
            "{{ device = \"{}\", pool_start = \"{v4}\", pool_end = \"{v4}\", lease_secs = 600 }}",
            vm.name,
            v4 = vm.v4
        )
    };
    let ra = |vm: &Vm| format!("{{ device = \"{}\", interval_secs = 4 }}", vm.name);
    format!(
        r#"
[[uplink]]
name = "up0"
spec = "{uplink}"

[[tenant]]
name = "blue"
uplink = "up0"
subnet = [{{ prefix = "10.213.0.0/24", gateway = "{GATEWAY_V4}" }}, {{ prefix = "fd00:213:1::/64", gateway = "fd00:213:1::1" }}]

[[tenant]]
name = "red"
uplink = "up0"
subnet = [{{ prefix = "10.213.0.0/24", gateway = "{GATEWAY_V4}" }}, {{ prefix = "fd00:213:2::/64", gateway = "fd00:213:2::1" }}]

{p1}{p2}{p3}[[address]]
device = "up0"
address = "{UPLINK_IP}/24"

[[address]]
device = "up0"
address = "{UPLINK_V6}/64"

[[route]]
destination = "0.0.0.0/0"
via = "{PEER_IP}"
device = "up0"

[[route]]
destination = "::/0"
via = "{PEER_V6}"
device = "up0"

[services]
lease_dir = "{leases}"
dhcp = [{d1}, {d2}, {d3}]
ra = [{r1}, {r2}, {r3}]
"#,
        uplink = UplinkKind::Packet.spec(),
        p1 = port(&VM1),
        p2 = port(&VM2),
        p3 = port(&VM3),
        leases = dir.join("leases").display(),
        d1 = dhcp(&VM1),
        d2 = dhcp(&VM2),
        d3 = dhcp(&VM3),
        r1 = ra(&VM1),
        r2 = ra(&VM2),
        r3 = ra(&VM3),
    )
}

/// What every guest does first: DHCP, SLAAC, print both, serve its name over HTTP, reach
/// its gateway and the peer over both families and fetch the peer's file. The shell
/// functions `ok MARKER CMD...` (retry until CMD succeeds, print `KNIC_MARKER <output>` or
/// `KNIC_MARKER FAIL`) and `never MARKER CMD...` (try a few times, print how many
/// succeeded) are left for the guest's own part. (`timeout`, not wget's `-T`: busybox
/// 1.35's wget crashes with `-T`.)
fn prelude(vm: &Vm) -> String {
    let prefix = &vm.v6[..vm.v6.find(":0:").unwrap_or(0)];
    format!(
        r#"ok() {{ m=$1; shift; i=0; until out=$("$@" 2>/dev/null) || [ $i -ge {TRIES} ]; do sleep 1; i=$((i+1)); done; [ $i -ge {TRIES} ] && out=FAIL; echo "KNIC_$m $out"; }}
never() {{ m=$1; shift; n=0; i=0; while [ $i -lt {NEGATIVE_TRIES} ]; do "$@" >/dev/null 2>&1 && n=$((n+1)); i=$((i+1)); done; echo "KNIC_$m $n"; }}
ping1() {{ ping -c 1 -W 2 "$1" >/dev/null && echo up; }}
fetch() {{ timeout 5 wget -q -O - "$1"; }}
{dhcp}{slaac}echo "KNIC_V4 $(ip -f inet addr show dev eth0 | grep inet)"
echo "KNIC_V6 $(ip -f inet6 addr show dev eth0 | grep 'inet6 fd00')"
mkdir -p /www; echo {name} > /www/name; httpd -p 80 -h /www
ok GW4 ping1 {GATEWAY_V4}
ok GW6 ping1 {gw6}
ok PEER4 ping1 {PEER_IP}
ok PEER6 ping1 {PEER_V6}
ok PEERFILE sh -c 'timeout 30 wget -q -O /tmp/file http://{PEER_IP}:{PEER_HTTP_PORT}/file && sha256sum /tmp/file | cut -d" " -f1'
"#,
        name = vm.name,
        gw6 = gateway_v6(vm),
        dhcp = initramfs::dhcp_client(),
        slaac = initramfs::wait_for_slaac(prefix),
    )
}

/// Blue's guests: the other's name over both families, then (vm1) keep fetching
/// 10.213.0.20's name for as long as the test runs.
fn blue_script(vm: &Vm, other: &Vm) -> String {
    let keep = if vm.name == "vm1" {
        format!(
            "while true; do echo \"KNIC_FETCH $(fetch http://{}/name 2>/dev/null || echo none)\"; sleep 2; done",
            VM2.v4
        )
    } else {
        "sleep 3600".to_owned()
    };
    format!(
        "{}ok OTHER4 fetch http://{}/name\nok OTHER6 fetch http://[{}]/name\necho KNIC_READY\n{keep}",
        prelude(vm),
        other.v4,
        other.v6
    )
}

/// Red's guest: out through its own SNAT (the prelude), never into blue.
fn red_script() -> String {
    format!(
        "{}never BLUE_HTTP4 fetch http://{v4}/name\nnever BLUE_PING4 ping1 {v4}\n\
         never BLUE_HTTP6 fetch http://[{v6}]/name\nnever BLUE_PING6 ping1 {v6}\n\
         echo KNIC_DONE\nsleep 3600",
        prelude(&VM3),
        v4 = VM1.v4,
        v6 = VM1.v6
    )
}

fn boot(dir: &Path, modules: &Path, vm: &Vm, script: &str) -> Guest {
    let initrd = dir.join(format!("{}.cpio", vm.name));
    initramfs::build(&initrd, modules, script);
    QemuGuest::new(
        &initrd,
        &dir.join(format!("{}.sock", vm.name)),
        &dir.join(format!("{}.console", vm.name)),
    )
    .mac(vm.mac)
    .spawn()
}

/// Asserts the lines every guest prints in its prelude: its lease, its SLAAC address, its
/// gateway and the peer over both families, and the peer's file byte for byte.
fn assert_prelude(guest: &Guest, vm: &Vm, file_sha256: &str) {
    let text = guest.text();
    assert!(text.contains("KNIC_DHCP_OK"), "{}: DHCP:\n{text}", vm.name);
    let lease = guest.value("KNIC_LEASE ");
    assert!(
        lease.contains(&format!("ip={} ", vm.v4))
            && lease.contains("mask=24")
            && lease.contains(&format!("router={GATEWAY_V4}")),
        "{}: {lease}",
        vm.name
    );
    assert!(
        guest.value("KNIC_V6 ").contains(vm.v6),
        "{}: a SLAAC address in its tenant's prefix:\n{text}",
        vm.name
    );
    for m in ["GW4", "GW6", "PEER4", "PEER6"] {
        assert_eq!(
            guest.value(&format!("KNIC_{m} ")),
            "up",
            "{}: {m}:\n{text}",
            vm.name
        );
    }
    assert_eq!(
        guest.value("KNIC_PEERFILE "),
        file_sha256,
        "{}: the peer's file through SNAT:\n{text}",
        vm.name
    );
}

#[test]
fn two_tenants_with_one_subnet_stock_guests_get_dhcp_and_slaac_reach_their_own_and_never_the_other()
{
    let _one = serial();
    require_root();
    require_tool("xz");
    let (_, modules) = initramfs::cloud_kernel();
    let topo = Topology::new("agtn");
    topo.prepare_peer(UplinkKind::Packet);
    let dir = Scratch::new("agent-tenants");
    // The peer: IPv6 on its veth and routes to both tenants' IPv6 prefixes through the
    // library; no route to 10.213.0.0/24 (IPv4 comes back only to the masqueraded address).
    topo.peer_ipv6(PEER_V6, UPLINK_V6, &["fd00:213:1::/64", "fd00:213:2::/64"]);
    let (_httpd, digest) = topo.peer_http(&dir.0, PEER_HTTP_PORT, FILE_BYTES);

    let file = dir.0.join("agent.toml");
    std::fs::write(&file, config(&dir.0)).unwrap_or_else(|e| panic!("{e}"));
    let agent = KnicAgent::start(
        &topo.agent_ns,
        &dir.0,
        &[
            format!("--config={}", file.display()),
            "--no-offload".into(),
        ],
    );
    let mut vm1 = boot(&dir.0, &modules, &VM1, &blue_script(&VM1, &VM2));
    let mut vm2 = boot(&dir.0, &modules, &VM2, &blue_script(&VM2, &VM1));
    vm1.wait("KNIC_READY", STEP, || agent.log_text());
    vm2.wait("KNIC_READY", STEP, || agent.log_text());
    for (guest, vm, other) in [(&vm1, &VM1, &VM2), (&vm2, &VM2, &VM1)] {
        assert_prelude(guest, vm, &digest);
        for m in ["OTHER4", "OTHER6"] {
            assert_eq!(
                guest.value(&format!("KNIC_{m} ")),
                other.name,
                "{} -> {} ({m}), same tenant:\n{}",
                vm.name,
                other.name,
                guest.text()
            );
        }
    }

    // Red's guest, with vm2's address, while blue runs.
    let mut vm3 = boot(&dir.0, &modules, &VM3, &red_script());
    vm3.wait("KNIC_DONE", STEP, || agent.log_text());
    assert_prelude(&vm3, &VM3, &digest);
    for m in ["BLUE_HTTP4", "BLUE_PING4", "BLUE_HTTP6", "BLUE_PING6"] {
        assert_eq!(
            vm3.value(&format!("KNIC_{m} ")),
            "0",
            "red's vm3 reached blue's vm1 ({m}):\n{}",
            vm3.text()
        );
    }
    // vm1's fetches of 10.213.0.20 from now on: vm2's, never red's vm3.
    let seen = vm1.text().len();
    let mut fetched = Vec::new();
    wait_for("vm1 to fetch 10.213.0.20 twice more", STEP, || {
        fetched = vm1.text()[seen..]
            .lines()
            .filter_map(|l| l.trim().strip_prefix("KNIC_FETCH "))
            .map(str::to_owned)
            .collect();
        fetched.len() >= 2
    });
    assert!(
        fetched.iter().all(|f| f == "vm2"),
        "blue's 10.213.0.20 is vm2 while red's vm3 has the same address: {fetched:?}"
    );

    // The leases: three, and red's is blue's vm2's address.
    let leases = agent.ctl(&["leases"]);
    for vm in [&VM1, &VM2, &VM3] {
        let l = leases
            .as_array()
            .and_then(|a| a.iter().find(|l| l["device"] == vm.name))
            .unwrap_or_else(|| panic!("no lease on {}: {leases}", vm.name));
        assert_eq!(
            (l["mac"].as_str(), l["ip"].as_str(), l["state"].as_str()),
            (Some(vm.mac), Some(vm.v4), Some("bound")),
            "{leases}"
        );
    }
    // Honest guests, DHCP, DAD and SLAAC included: nothing of theirs is dropped.
    let spoof = agent.ctl(&["antispoof"]);
    for port in spoof.as_array().into_iter().flatten() {
        let drops = port["drops"].as_object();
        assert!(
            drops.is_some_and(|d| d.values().all(|r| r["packets"] == 0)),
            "anti-spoofing dropped an honest guest's frames: {spoof}"
        );
    }
    assert_eq!(spoof.as_array().map(Vec::len), Some(3), "{spoof}");
    for guest in [&mut vm1, &mut vm2, &mut vm3] {
        assert!(guest.vm.stop("-TERM", Duration::from_secs(30)));
    }
}
