//! Overlapping tenants behind one uplink, told apart by their conntrack zones: tenants blue
//! and red both use 10.61.0.0/24, both masquerade to uplink up0, and each has a guest at
//! 10.61.0.10. The guests are Linux network namespaces of the host (real TCP/UDP stacks),
//! wired to their vhost-user ports by DPDK testpmd forwarding between a `net_virtio_user`
//! and a `net_tap` in the guest's namespace.
//!
//! * Both guests open TCP and UDP flows to the peer's servers from the SAME address and
//!   source port at the same time (the servers answer only once both arrived): both
//!   complete, the peer sees two distinct sources on the uplink's address, and the library's
//!   conntrack shows the two flows in the two tenants' zones. With one conntrack table
//!   (no zones) red's flow would be taken for blue's, and the servers would see one source.
//! * Blue's guest cannot reach red's other guest address (10.61.0.20).
//!
//! Needs root, `ip` and `dpdk-testpmd` (`deploy/dev/setup-debian.sh`).
#![allow(clippy::unwrap_used)] // test helpers: a failure fails the test

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::Path;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use test_support::{
    NetNs, Proc, Scratch, in_netns, require_root, require_tool, run, tcp_connect_from, wait_for,
};

mod common;
use common::{RunningAgent, uplink_veth};

const PEER: &str = "10.62.0.1";
const UPLINK_ADDR: &str = "10.62.0.2";
const TCP_PORT: u16 = 7001;
const UDP_PORT: u16 = 7002;
/// Red's second guest address, where red's guest listens and blue's must not reach.
const RED_ONLY: &str = "10.61.0.20";
const RED_ONLY_PORT: u16 = 7003;
/// The source port both guests use for their flows.
const SRC_PORT: u16 = 40000;
/// How long a flow may take end to end (two testpmd forwarders share two cores with the
/// agent and the test).
const FLOW_TIMEOUT: Duration = Duration::from_secs(20);

fn config(dir: &Path) -> String {
    let sock = |n: &str| dir.join(format!("{n}.sock")).display().to_string();
    format!(
        r#"
[[uplink]]
name = "up0"
spec = "packet:zna"

[[tenant]]
name = "blue"
uplink = "up0"
subnet = [{{ prefix = "10.61.0.0/24", gateway = "10.61.0.1" }}]

[[tenant]]
name = "red"
uplink = "up0"
subnet = [{{ prefix = "10.61.0.0/24", gateway = "10.61.0.1" }}]

[[port]]
name = "zb1"
socket = "{b1}"
tenant = "blue"
mac = "52:54:00:71:00:0a"
addresses = ["10.61.0.10"]

[[port]]
name = "zr1"
socket = "{r1}"
tenant = "red"
mac = "52:54:00:71:01:0a"
addresses = ["10.61.0.10", "{RED_ONLY}"]

[[address]]
device = "up0"
address = "{UPLINK_ADDR}/24"
"#,
        b1 = sock("zb1"),
        r1 = sock("zr1"),
    )
}

/// A guest: a namespace whose TAP testpmd joins to the port's vhost-user socket.
struct Guest {
    ns: NetNs,
    _testpmd: Proc,
}

struct Setup {
    agent: RunningAgent,
    dir: Scratch,
    _agent_ns: NetNs,
    peer_ns: NetNs,
}

impl Setup {
    fn start() -> Setup {
        let agent_ns = NetNs::new("zones-a");
        let peer_ns = NetNs::new("zones-p");
        // No route to the tenants' subnet: the peer answers only what SNAT made its
        // neighbour's.
        uplink_veth(&agent_ns, "zna", &peer_ns, "znb", &format!("{PEER}/24"));
        let dir = Scratch::new("zones");
        let file = dir.0.join("agent.toml");
        std::fs::write(&file, config(&dir.0)).unwrap();
        let agent = RunningAgent::start(&agent_ns, &file, &dir.0);
        Setup {
            agent,
            dir,
            _agent_ns: agent_ns,
            peer_ns,
        }
    }

    fn json(&self, args: &[&str]) -> Value {
        self.agent.json(args)
    }

    fn diagnosis(&self) -> String {
        self.agent.diagnosis(&[
            &["stats"],
            &["antispoof"],
            &["tenant", "list"],
            &["nat"],
            &["conntrack"],
        ])
    }

    /// What blue's and red's flows saw, or a failure naming both outcomes and what the peer
    /// saw.
    fn both_completed(
        &self,
        what: &str,
        flows: [Result<String, String>; 2],
        sources: &[SocketAddr],
    ) -> (String, String) {
        match flows {
            [Ok(b), Ok(r)] => (b, r),
            [b, r] => panic!(
                "{what} flows: blue {b:?}, red {r:?}; the peer saw {sources:?}\n{}",
                self.diagnosis()
            ),
        }
    }

    /// Starts the guest of port `port`: namespace, testpmd (`io` forwarding between the
    /// port's socket and a TAP in the namespace), the TAP with the port's guest MAC and
    /// `addresses`, a default route via the tenant's gateway.
    fn guest(&self, port: &str, addresses: &[&str]) -> Guest {
        let bin = require_tool("dpdk-testpmd");
        let ports = self.json(&["port", "list"]);
        let mac = ports
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == port)
            .unwrap_or_else(|| panic!("no port {port}: {ports}"))["guest_mac"]
            .as_str()
            .unwrap()
            .to_owned();
        let ns = NetNs::new(&format!("zones-{port}"));
        let log = self.dir.0.join(format!("testpmd-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = ns.cmd(bin);
        cmd.args(["-l", "0-1", "--no-huge", "-m", "256", "--no-pci"])
            .arg(format!("--file-prefix=zn{}{port}", std::process::id()))
            .arg("--vdev")
            .arg(format!(
                "net_virtio_user0,path={},queues=1,mac={mac}",
                self.dir.0.join(format!("{port}.sock")).display()
            ))
            .arg("--vdev")
            .arg(format!("net_tap0,iface=gtap,mac={mac}"))
            .args([
                "--",
                "--forward-mode=io",
                "--auto-start",
                "--total-num-mbufs=4096",
                "--stats-period",
                "1",
            ])
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let testpmd = Proc::spawn("dpdk-testpmd", &mut cmd);
        wait_for(
            &format!("guest {port}'s TAP"),
            Duration::from_secs(30),
            || {
                ns.cmd("ip")
                    .args(["link", "show", "gtap"])
                    .output()
                    .unwrap()
                    .status
                    .success()
            },
        );
        // The frames the guest sends carry the TAP's own MAC: the port's guest MAC, the
        // only source its anti-spoofing rules let in.
        run(ns.cmd("ip").args(["link", "set", "gtap", "address", &mac]));
        for a in addresses {
            run(ns
                .cmd("ip")
                .args(["addr", "add", &format!("{a}/24"), "dev", "gtap"]));
        }
        run(ns.cmd("ip").args(["link", "set", "gtap", "up"]));
        run(ns
            .cmd("ip")
            .args(["route", "add", "default", "via", "10.61.0.1"]));
        wait_for(
            &format!("guest {port} to connect"),
            Duration::from_secs(30),
            || {
                self.json(&["port", "list"])
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == port && p["guest_connected"] == true)
            },
        );
        Guest {
            ns,
            _testpmd: testpmd,
        }
    }
}

fn addr(ip: &str, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip.parse().unwrap(), port)
}

/// The peer's TCP server: accepts two connections, and only once both are open answers each
/// with the source address it saw. Returns those sources.
fn tcp_server(listener: TcpListener) -> Vec<SocketAddr> {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + FLOW_TIMEOUT;
    let mut conns = Vec::new();
    while conns.len() < 2 && Instant::now() < deadline {
        match listener.accept() {
            Ok((c, from)) => conns.push((c, from)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
    for (c, from) in &mut conns {
        c.set_nonblocking(false).unwrap();
        c.set_read_timeout(Some(FLOW_TIMEOUT)).unwrap();
        let mut name = [0u8; 4];
        if c.read_exact(&mut name).is_ok() {
            let _ = c.write_all(format!("{from}\n").as_bytes());
        }
    }
    conns.into_iter().map(|(_, from)| from).collect()
}

/// The peer's UDP server: collects datagrams until two sources sent one, then answers every
/// datagram of a known source with that source, until `stop`.
fn udp_server(socket: UdpSocket, stop: &AtomicBool) -> Vec<SocketAddr> {
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut seen: BTreeMap<SocketAddr, ()> = BTreeMap::new();
    let deadline = Instant::now() + FLOW_TIMEOUT * 2;
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let Ok((_, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        seen.insert(from, ());
        if seen.len() >= 2 {
            for to in seen.keys() {
                let _ = socket.send_to(to.to_string().as_bytes(), to);
            }
        }
    }
    seen.into_keys().collect()
}

/// A guest's TCP flow: connects from 10.61.0.10:SRC_PORT, sends its name, reads the source
/// the peer saw.
fn tcp_client(name: &'static str) -> Result<String, String> {
    let mut c = tcp_connect_from(
        addr("10.61.0.10", SRC_PORT),
        addr(PEER, TCP_PORT),
        FLOW_TIMEOUT,
    )
    .map_err(|e| format!("{name}: TCP connect: {e}"))?;
    c.set_read_timeout(Some(FLOW_TIMEOUT)).unwrap();
    c.write_all(name.as_bytes())
        .map_err(|e| format!("{name}: TCP write: {e}"))?;
    let mut seen = String::new();
    c.read_to_string(&mut seen)
        .map_err(|e| format!("{name}: TCP read: {e}"))?;
    Ok(seen.trim().to_owned())
}

/// A guest's UDP flow from 10.61.0.10:SRC_PORT: sends its name every 200 ms until the peer
/// answers with the source it saw.
fn udp_client(name: &'static str) -> Result<String, String> {
    let s = UdpSocket::bind(addr("10.61.0.10", SRC_PORT)).map_err(|e| format!("{name}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + FLOW_TIMEOUT;
    let mut buf = [0u8; 64];
    while Instant::now() < deadline {
        let _ = s.send_to(name.as_bytes(), addr(PEER, UDP_PORT));
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    Err(format!(
        "{name}: no UDP answer from the peer within {FLOW_TIMEOUT:?}"
    ))
}

/// Runs `client` in both guests' namespaces at the same time.
fn in_both(
    blue: &Guest,
    red: &Guest,
    client: fn(&'static str) -> Result<String, String>,
) -> [Result<String, String>; 2] {
    let start = std::sync::Arc::new(Barrier::new(2));
    let (b, r) = (blue.ns.name.clone(), red.ns.name.clone());
    let sb = std::sync::Arc::clone(&start);
    let blue_flow = std::thread::spawn(move || {
        in_netns(&b, move || {
            sb.wait();
            client("blue")
        })
    });
    let red_flow = in_netns(&r, move || {
        start.wait();
        client("red ")
    });
    [blue_flow.join().unwrap(), red_flow]
}

/// The conntrack entries of flows from 10.61.0.10:SRC_PORT to the peer's `port`.
fn flows(ct: &Value, protocol: u64, port: u16) -> Vec<Value> {
    ct.as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            let o = &e["original"];
            o["src"] == "10.61.0.10"
                && o["src_port"] == SRC_PORT
                && o["dst"] == PEER
                && o["dst_port"] == port
                && o["protocol"] == protocol
        })
        .cloned()
        .collect()
}

#[test]
fn overlapping_tenants_share_an_uplink_through_their_conntrack_zones() {
    require_root();
    let s = Setup::start();

    let tenants = s.json(&["tenant", "list"]);
    let zone = |i: usize| tenants[i]["zone"].as_u64().unwrap();
    assert_ne!(zone(0), zone(1), "{tenants}");
    assert!(zone(0) != 0 && zone(1) != 0, "{tenants}");
    for i in 0..2 {
        // Connected to up0 without return routes (they would clash): by zone marks only.
        assert_eq!(tenants[i]["connected"], true, "{tenants}");
        assert_eq!(
            tenants[i]["return_routes"],
            serde_json::json!([]),
            "{tenants}"
        );
    }

    let blue = s.guest("zb1", &["10.61.0.10"]);
    let red = s.guest("zr1", &["10.61.0.10", RED_ONLY]);

    // The peer's servers, and red's listener on its second address.
    let tcp = in_netns(&s.peer_ns.name, || {
        TcpListener::bind(addr(PEER, TCP_PORT)).unwrap()
    });
    let udp = in_netns(&s.peer_ns.name, || {
        UdpSocket::bind(addr(PEER, UDP_PORT)).unwrap()
    });
    let red_only = in_netns(&red.ns.name, || {
        TcpListener::bind(addr(RED_ONLY, RED_ONLY_PORT)).unwrap()
    });

    // TCP: both flows at once, from the same address and port.
    let server = std::thread::spawn(move || tcp_server(tcp));
    let [b, r] = in_both(&blue, &red, tcp_client);
    let sources = server.join().unwrap();
    let (b, r) = s.both_completed("TCP", [b, r], &sources);
    assert_ne!(b, r, "the peer saw both tenants' TCP flows from one source");
    for seen in [&b, &r] {
        assert!(
            seen.starts_with(&format!("{UPLINK_ADDR}:")),
            "{seen}: not masqueraded"
        );
    }
    // Both connections' conntrack entries, one per zone (they are closed, the entries stay
    // in TIME_WAIT).
    let ct = s.json(&["conntrack"]);
    let tcp_flows = flows(&ct, 6, TCP_PORT);
    let mut zones: Vec<u64> = tcp_flows
        .iter()
        .map(|e| e["original"]["zone"].as_u64().unwrap())
        .collect();
    zones.sort_unstable();
    let mut want = vec![zone(0), zone(1)];
    want.sort_unstable();
    assert_eq!(zones, want, "TCP entries: {tcp_flows:?}");
    for e in &tcp_flows {
        assert_eq!(e["snat"], true, "{e}");
        assert_eq!(
            e["reply"]["zone"], 0,
            "replies live in the default zone: {e}"
        );
    }
    assert_ne!(
        tcp_flows[0]["reply"]["dst_port"], tcp_flows[1]["reply"]["dst_port"],
        "{tcp_flows:?}"
    );

    // UDP: the same, both flows at once.
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let stop_server = std::sync::Arc::clone(&stop);
    let server = std::thread::spawn(move || udp_server(udp, &stop_server));
    let [b, r] = in_both(&blue, &red, udp_client);
    stop.store(true, Ordering::Relaxed);
    let sources = server.join().unwrap();
    let (b, r) = s.both_completed("UDP", [b, r], &sources);
    assert_ne!(b, r, "the peer saw both tenants' UDP flows from one source");
    assert_eq!(sources.len(), 2, "{sources:?}");
    let ct = s.json(&["conntrack"]);
    let udp_flows = flows(&ct, 17, UDP_PORT);
    assert_eq!(udp_flows.len(), 2, "UDP entries: {udp_flows:?}");

    // Blue's guest cannot reach red's other guest address.
    let blue_ns = blue.ns.name.clone();
    let reached = in_netns(&blue_ns, || {
        tcp_connect_from(
            addr("10.61.0.10", 0),
            addr(RED_ONLY, RED_ONLY_PORT),
            Duration::from_secs(3),
        )
        .is_ok()
    });
    assert!(!reached, "blue's guest reached red's {RED_ONLY}");
    red_only.set_nonblocking(true).unwrap();
    assert!(
        red_only.accept().is_err(),
        "red's guest accepted a connection from blue"
    );
}
