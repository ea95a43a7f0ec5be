//! Tenants as VRFs, with the agent started from a config file: two tenants with the same
//! subnet, DPDK testpmd guests on their ports, a peer behind the uplink.
//!
//! * A guest of tenant blue sends UDP (testpmd txonly) to 10.61.0.20: blue's port with that
//!   address receives it, red's port with the very same address receives none of it.
//! * The peer pings blue's 10.61.0.20 through the uplink and the VRF (route leaking) and
//!   gets answers; red's guest sees none of that either.
//! * The same flood with a forged source address is dropped on b1's ingress by its
//!   anti-spoofing rules and counted (`ipv4_source`); b2 gets none of it.
//! * b1 sends UDP to the peer: it leaves masqueraded (SNAT), and the library's conntrack
//!   entry (`knicctl conntrack`) shows the translation.
//! * The library kernel's own view: each port enslaved to its tenant's VRF.
//! * Reload: a file with a mistake changes nothing; a good file adds a tenant and a port
//!   and removes one, by SIGHUP and by `knicctl reload`.
//!
//! Needs root, `ip`, `ping` and `dpdk-testpmd` (`deploy/dev/setup-debian.sh`).
#![allow(clippy::unwrap_used)] // test helpers: a failure fails the test

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use test_support::{NetNs, Proc, Scratch, require_root, require_tool, run, wait_for};

mod common;
use common::{RunningAgent, ctl, uplink_veth};

/// Frames a port of another tenant may see while the test's traffic flows: the library's
/// own IPv6 neighbour discovery and MLD on link-up, never the thousands of the flood.
const NOISE: u64 = 30;
/// Frames a flood must at least deliver (or have dropped) for the test to mean anything:
/// well above `NOISE`, well below what a loaded 2-core machine moves in a second.
const FLOOD: u64 = 100;

fn config(dir: &Path, extra: &str) -> String {
    let sock = |n: &str| dir.join(format!("{n}.sock")).display().to_string();
    format!(
        r#"
[[uplink]]
name = "up0"
spec = "packet:svua"

[[tenant]]
name = "blue"
uplink = "up0"
subnet = [{{ prefix = "10.61.0.0/24", gateway = "10.61.0.1" }}]

[[tenant]]
name = "red"
subnet = [{{ prefix = "10.61.0.0/24", gateway = "10.61.0.1" }}]

[[port]]
name = "b1"
socket = "{b1}"
tenant = "blue"
mac = "52:54:00:61:00:0a"
addresses = ["10.61.0.10"]

[[port]]
name = "b2"
socket = "{b2}"
tenant = "blue"
mac = "52:54:00:61:00:14"
addresses = ["10.61.0.20"]

[[port]]
name = "r1"
socket = "{r1}"
tenant = "red"
mac = "52:54:00:61:01:14"
addresses = ["10.61.0.20"]

[[address]]
device = "up0"
address = "10.62.0.2/24"
{extra}"#,
        b1 = sock("b1"),
        b2 = sock("b2"),
        r1 = sock("r1"),
    )
}

struct Setup {
    agent: RunningAgent,
    api: PathBuf,
    file: PathBuf,
    dir: Scratch,
    /// Kept for its lifetime: the agent's namespace goes when the test ends.
    _agent_ns: NetNs,
    peer_ns: NetNs,
}

impl Setup {
    fn start() -> Setup {
        let agent_ns = NetNs::new("services-ta");
        let peer_ns = NetNs::new("services-tp");
        uplink_veth(&agent_ns, "svua", &peer_ns, "svub", "10.62.0.1/24");
        run(peer_ns
            .cmd("ip")
            .args(["route", "add", "10.61.0.0/24", "via", "10.62.0.2"]));
        let dir = Scratch::new("services-tenants");
        let file = dir.0.join("agent.toml");
        std::fs::write(&file, config(&dir.0, "")).unwrap();
        let agent = RunningAgent::start(&agent_ns, &file, &dir.0);
        Setup {
            api: agent.api.clone(),
            agent,
            file,
            dir,
            _agent_ns: agent_ns,
            peer_ns,
        }
    }

    fn json(&self, args: &[&str]) -> Value {
        self.agent.json(args)
    }

    fn port(&self, name: &str) -> Value {
        let ports = self.json(&["port", "list"]);
        ports
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no port {name}: {ports}"))
            .clone()
    }

    /// Frames the guest of port `name` received (its vhost queues' rx_packets).
    fn guest_rx(&self, name: &str) -> u64 {
        let stats = self.json(&["stats"]);
        let port = stats["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no port {name}: {stats}"))
            .clone();
        port["vhost"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["rx_packets"].as_u64().unwrap())
            .sum()
    }

    fn testpmd(&self, port: &str, mode: &str, extra: &[String]) -> Proc {
        let bin = require_tool("dpdk-testpmd");
        // The guest uses the MAC its port was given (the anti-spoofing rules allow only it).
        let mac = self.port(port)["guest_mac"].as_str().unwrap().to_owned();
        let log = self.dir.0.join(format!("testpmd-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(bin);
        cmd.args(["-l", "0-1", "--no-huge", "-m", "256", "--no-pci"])
            .arg(format!("--file-prefix=svc{}{port}", std::process::id()))
            .arg("--vdev")
            .arg(format!(
                "net_virtio_user0,path={},queues=1,mac={mac}",
                self.dir.0.join(format!("{port}.sock")).display()
            ))
            .arg("--")
            .arg(format!("--forward-mode={mode}"))
            // A stats period keeps testpmd running without a terminal (else it waits for
            // Enter on stdin, which is empty, and exits).
            .args([
                "--auto-start",
                "--total-num-mbufs=4096",
                "--stats-period",
                "1",
            ])
            .args(extra)
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let p = Proc::spawn("dpdk-testpmd", &mut cmd);
        wait_for(
            &format!("guest {port} to connect"),
            Duration::from_secs(30),
            || self.port(port)["guest_connected"] == true,
        );
        p
    }

    /// b1's guest sends UDP from `src` to `dst` (testpmd txonly, to b1's library MAC) for
    /// `how_long`.
    /// b1's guest (testpmd txonly) floods UDP from `src` to `dst` until `enough` says the
    /// flood did what the caller measures (checked every 100 ms; at most 30 s, so a testpmd
    /// slow to start on a loaded machine still sends enough).
    fn flood_from_b1(&self, src: &str, dst: &str, enough: impl Fn() -> bool) {
        let lib_mac = self.port("b1")["library_mac"].as_str().unwrap().to_owned();
        let mut tx = self.testpmd(
            "b1",
            "txonly",
            &[
                format!("--eth-peer=0,{lib_mac}"),
                format!("--tx-ip={src},{dst}"),
                "--burst=8".into(),
            ],
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !enough() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            tx.stop("-INT", Duration::from_secs(20)),
            "testpmd txonly did not stop"
        );
    }

    /// Whether all three pings to `to` are answered within the deadline.
    fn ping(&self, to: &str) -> bool {
        self.peer_ns
            .cmd("ping")
            .args(["-c", "3", "-i", "0.2", "-W", "2", "-w", "4", to])
            .output()
            .unwrap()
            .status
            .success()
    }

    /// What the agent and the library kernel say, for a failure message.
    fn diagnosis(&self) -> String {
        self.agent.diagnosis(&[
            &["stats"],
            &["antispoof"],
            &["route", "list"],
            &["links"],
            &["conntrack"],
        ])
    }

    fn reload_by_sighup(&self) {
        run(Command::new("kill")
            .arg("-HUP")
            .arg(self.agent.agent.child.id().to_string()));
    }
}

/// Anti-spoofing drops of `port` for `reason` (packets).
fn spoof_drops(s: &Setup, port: &str, reason: &str) -> u64 {
    let v = s.json(&["antispoof"]);
    v.as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == port)
        .unwrap_or_else(|| panic!("no anti-spoofing counters for {port}: {v}"))["drops"][reason]
        ["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {reason} for {port}: {v}"))
}

#[test]
fn tenants_with_one_subnet_are_isolated_and_reach_their_uplink() {
    require_root();
    let s = Setup::start();

    let tenants = s.json(&["tenant", "list"]);
    assert_eq!(tenants[0]["vrf"], "vrf-blue", "{tenants}");
    assert_eq!(tenants[0]["ports"], serde_json::json!(["b1", "b2"]));
    assert_eq!(tenants[1]["vrf"], "vrf-red", "{tenants}");
    assert_eq!(tenants[1]["ports"], serde_json::json!(["r1"]));
    // Only blue has the uplink, so the main table routes its subnet back into its VRF.
    assert_eq!(
        tenants[0]["return_routes"],
        serde_json::json!(["10.61.0.0/24"]),
        "{tenants}"
    );
    // The library kernel's own view: every port enslaved to its tenant's VRF.
    let links = s.json(&["links"]);
    for (port, vrf) in [("b1", "vrf-blue"), ("b2", "vrf-blue"), ("r1", "vrf-red")] {
        let l = links
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["device"] == port)
            .unwrap_or_else(|| panic!("no link for {port}: {links}"));
        assert_eq!(l["master"], vrf, "{port}: {links}");
    }

    let _b2 = s.testpmd("b2", "icmpecho", &[]);
    let _r1 = s.testpmd("r1", "icmpecho", &[]);
    let red_before = s.guest_rx("r1");

    // The peer reaches blue's guest through the uplink and blue's VRF.
    let b2_before = s.guest_rx("b2");
    assert!(
        s.ping("10.61.0.20"),
        "the peer cannot ping blue's 10.61.0.20\n{}",
        s.diagnosis()
    );
    assert!(s.guest_rx("b2") >= b2_before + 3);

    // Blue's b1 floods UDP to 10.61.0.20 for two seconds.
    let b2_before = s.guest_rx("b2");
    s.flood_from_b1("10.61.0.10", "10.61.0.20", || {
        s.guest_rx("b2") - b2_before > FLOOD
    });
    let b2_got = s.guest_rx("b2") - b2_before;
    let red_got = s.guest_rx("r1") - red_before;
    assert!(
        b2_got > FLOOD,
        "blue's b2 got only {b2_got} frames from blue's b1: the tenant's own ports do not reach each other"
    );
    assert!(
        red_got <= NOISE,
        "red's r1 (same address, other tenant) got {red_got} frames while blue flooded {b2_got}"
    );

    // SNAT: b1 sends UDP to the peer; the peer gets it, and conntrack shows the flow
    // masqueraded to the uplink's address.
    let nat = s.json(&["nat"]);
    assert_eq!(nat[0]["tenant"], "blue", "{nat}");
    assert_eq!(nat[0]["kind"], "snat", "{nat}");
    assert_eq!(nat[0]["applied"], true, "{nat}");
    let peer_before = s.peer_ns.if_stat("svub", "rx_packets");
    s.flood_from_b1("10.61.0.10", "10.62.0.1", || {
        s.peer_ns.if_stat("svub", "rx_packets") - peer_before > FLOOD
    });
    let peer_got = s.peer_ns.if_stat("svub", "rx_packets") - peer_before;
    assert!(
        peer_got > FLOOD,
        "the peer got only {peer_got} frames from blue's b1\n{}",
        s.diagnosis()
    );
    let ct = s.json(&["conntrack"]);
    let flow = ct
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["original"]["src"] == "10.61.0.10"
                && e["original"]["dst"] == "10.62.0.1"
                && e["original"]["protocol"] == 17
        })
        .unwrap_or_else(|| panic!("no conntrack entry for b1's flow: {ct}"));
    assert_eq!(flow["snat"], true, "{flow}");
    assert_eq!(flow["reply"]["dst"], "10.62.0.2", "{flow}");

    // The same flood with a forged source: dropped on b1's ingress and counted.
    let spoof_before = spoof_drops(&s, "b1", "ipv4_source");
    let b2_before = s.guest_rx("b2");
    s.flood_from_b1("10.61.0.99", "10.61.0.20", || {
        spoof_drops(&s, "b1", "ipv4_source") - spoof_before > FLOOD
    });
    let forged = spoof_drops(&s, "b1", "ipv4_source") - spoof_before;
    let b2_got = s.guest_rx("b2") - b2_before;
    assert!(
        forged > FLOOD,
        "only {forged} forged frames counted: {}",
        s.json(&["antispoof"])
    );
    assert!(
        b2_got <= NOISE,
        "b2 got {b2_got} frames with a forged source"
    );
    assert_eq!(spoof_drops(&s, "b2", "ipv4_source"), 0);

    // Reload: a mistake changes nothing.
    let good = std::fs::read_to_string(&s.file).unwrap();
    std::fs::write(
        &s.file,
        good.replace("uplink = \"up0\"", "uplink = \"up9\""),
    )
    .unwrap();
    let e = ctl(&s.api, &["reload"]).unwrap_err();
    assert!(e.contains("uplink") && e.contains("up9"), "{e}");
    s.reload_by_sighup();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.json(&["tenant", "list"]), tenants);
    assert!(s.ping("10.61.0.20"), "a refused reload broke blue");

    // A good file: tenant green with a port g1 added, r1 and red removed (SIGHUP).
    let sock = s.dir.0.join("g1.sock").display().to_string();
    let next = config(
        &s.dir.0,
        &format!(
            "[[tenant]]\nname = \"green\"\nsubnet = [{{ prefix = \"10.63.0.0/24\", gateway = \"10.63.0.1\" }}]\n\
             [[port]]\nname = \"g1\"\nsocket = \"{sock}\"\ntenant = \"green\"\n"
        ),
    );
    let a = next.find("[[tenant]]\nname = \"red\"").unwrap();
    let b = next.find("[[port]]\nname = \"b1\"").unwrap();
    let mut next = format!("{}{}", &next[..a], &next[b..]);
    let a = next.find("[[port]]\nname = \"r1\"").unwrap();
    let b = next.find("[[address]]").unwrap();
    next.replace_range(a..b, "");
    std::fs::write(&s.file, &next).unwrap();
    s.reload_by_sighup();
    wait_for("the SIGHUP reload", Duration::from_secs(20), || {
        s.json(&["tenant", "list"])
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "green")
    });
    let tenants = s.json(&["tenant", "list"]);
    let names: Vec<&str> = tenants
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["blue", "green"], "{tenants}");
    let ports: Vec<String> = s
        .json(&["port", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ports, ["b1", "b2", "g1"]);
    // The same file again through the API: nothing to do.
    let v = s.json(&["reload"]);
    assert_eq!(v["ports_added"], serde_json::json!([]), "{v}");
    assert_eq!(v["tenants_removed"], serde_json::json!([]), "{v}");
    assert!(s.ping("10.61.0.20"), "blue broke across reloads");
}
