//! knic-agent in a network namespace, driven through `knicctl --output json`, with a peer
//! namespace behind a veth uplink: the topology of the agent's end-to-end tests.
//!
//! ```text
//!  guests ──vhost-user──▶ knic-agent (namespace A: uplink AF_PACKET or AF_XDP on kga)
//!                                   kga ══ veth ══ kgb (namespace B: the peer, PEER_IP)
//! ```
//! Inside the agent's library kernel the uplink has UPLINK_IP and port `vmN` has
//! `10.210.N.1/24`; the guest on it is `10.210.N.2`. The peer routes 10.210.0.0/16 via the
//! library.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::{
    Footprint, NetNs, Proc, footprint, pseudo_random, run, sha256, wait_for, workspace_bin,
};

/// Readings in a row, 100 ms apart, that [`KnicAgent::resources`] wants unchanged.
const SETTLED_SAMPLES: u32 = 5;
/// How long [`KnicAgent::resources`] waits for the agent's fds and threads to settle.
const SETTLE_WITHIN: Duration = Duration::from_secs(10);

/// The peer's address on its veth end.
pub const PEER_IP: &str = "10.210.0.1";
/// The library's address on the uplink.
pub const UPLINK_IP: &str = "10.210.0.2";

/// The MAC the host-forwarding references give the TAP that stands for port `vm1`.
pub const HOST_TAP_MAC: &str = "02:4b:42:00:00:01";

/// The library-side address of port `vm{n}` (the guest's gateway).
pub fn gateway_ip(n: u8) -> String {
    format!("10.210.{n}.1")
}

/// The guest's address behind port `vm{n}`.
pub fn guest_ip(n: u8) -> String {
    format!("10.210.{n}.2")
}

/// Attach/detach cycles the leak tests run before taking their baseline: the first
/// connections fault in memory the agent keeps (allocator arenas, the vhost workers'
/// stacks), which is not a leak.
pub const LEAK_WARMUP: usize = 3;
/// RSS may wander by allocator noise, not by a per-connection leak: 100 connections that
/// each leaked one 64 KiB packet buffer would exceed this.
pub const RSS_SLACK_KIB: u64 = 4096;

/// How the agent's uplink reaches the veth `kga`: the same scenario runs over each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UplinkKind {
    /// AF_PACKET with `PACKET_VNET_HDR` (`packet:kga`).
    Packet,
    /// AF_XDP through libxdp's program, copy mode on a veth (`xdp:kga`).
    Xdp,
}

impl UplinkKind {
    /// The agent's `--uplink` value for `kga`.
    pub fn spec(self) -> &'static str {
        match self {
            Self::Packet => "packet:kga",
            Self::Xdp => "xdp:kga",
        }
    }
}

/// The agent's namespace and the peer's, joined by a veth pair.
#[derive(Debug)]
pub struct Topology {
    pub agent_ns: NetNs,
    pub peer_ns: NetNs,
}

impl Topology {
    pub fn new(tag: &str) -> Topology {
        let agent_ns = NetNs::new(&format!("{tag}-a"));
        let peer_ns = NetNs::new(&format!("{tag}-p"));
        run(agent_ns.cmd("ip").args([
            "link",
            "add",
            "kga",
            "type",
            "veth",
            "peer",
            "name",
            "kgb",
            "netns",
            &peer_ns.name,
        ]));
        run(agent_ns.cmd("ip").args(["link", "set", "kga", "up"]));
        run(peer_ns
            .cmd("ip")
            .args(["addr", "add", &format!("{PEER_IP}/24"), "dev", "kgb"]));
        run(peer_ns.cmd("ip").args(["link", "set", "kgb", "up"]));
        run(peer_ns
            .cmd("ip")
            .args(["route", "add", "10.210.0.0/16", "via", UPLINK_IP]));
        Topology { agent_ns, peer_ns }
    }

    /// Prepares the peer's veth end for `uplink`. AF_XDP hands the library a veth frame's
    /// bytes without its metadata, so a checksum the peer left partial (its veth offloads
    /// TX checksums, `CHECKSUM_PARTIAL`) would arrive unfinished and the library would drop
    /// the segment as corrupt; on a wire every frame has its checksum, so for AF_XDP the
    /// peer computes it (`ethtool -K kgb tx off`). AF_PACKET carries the partial checksum
    /// in its virtio-net header, and keeps the offload on.
    pub fn prepare_peer(&self, uplink: UplinkKind) {
        let tx = match uplink {
            UplinkKind::Packet => "on",
            UplinkKind::Xdp => "off",
        };
        run(self
            .peer_ns
            .cmd(crate::require_tool("ethtool"))
            .args(["-K", "kgb", "tx", tx]));
    }

    /// Makes the agent's namespace a router in the library's place, for the references
    /// that forward through the host kernel: the veth end `kga` gets the library's uplink
    /// address and IPv4 forwarding is on. A TAP then stands for port `vm1`
    /// ([`Topology::route_tap`]).
    pub fn host_forwarding(&self) {
        run(self
            .agent_ns
            .cmd("sysctl")
            .args(["-qw", "net.ipv4.ip_forward=1"]));
        run(self.agent_ns.cmd("ip").args([
            "addr",
            "add",
            &format!("{UPLINK_IP}/24"),
            "dev",
            "kga",
        ]));
    }

    /// The MAC of the peer's veth end.
    pub fn peer_mac(&self) -> String {
        let out = run(self.peer_ns.cmd("cat").arg("/sys/class/net/kgb/address"));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Waits for the TAP `tap` a backend creates in the agent's namespace, gives it `mac`
    /// and port `vm1`'s gateway address, and brings it up: the host kernel then routes
    /// between it and the peer as the library does for `vm1`.
    pub fn route_tap(&self, tap: &str, mac: &str) {
        let ns = &self.agent_ns;
        wait_for(&format!("the TAP {tap}"), Duration::from_secs(30), || {
            ns.cmd("ip")
                .args(["link", "show", tap])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        run(ns.cmd("ip").args(["link", "set", tap, "address", mac]));
        run(ns
            .cmd("ip")
            .args(["addr", "add", &format!("{}/24", gateway_ip(1)), "dev", tap]));
        run(ns.cmd("ip").args(["link", "set", tap, "up"]));
    }

    /// The peer pings `to` `count` times through the library; all must answer. Returns
    /// ping's output.
    pub fn peer_ping(&self, to: &str, count: u32) -> String {
        let out = self
            .peer_ns
            .cmd("busybox")
            .args([
                "ping",
                "-c",
                &count.to_string(),
                "-W",
                "5",
                "-w",
                &(5 + 2 * count).to_string(),
                to,
            ])
            .output()
            .unwrap_or_else(|e| panic!("run ping: {e}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && text.contains(&format!("{count} packets received")),
            "ping {to} from the peer failed:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    /// Serves a file of `bytes` pseudo-random bytes as `/file` over HTTP from the peer's
    /// namespace (busybox `httpd` on `PEER_IP:port`, its root in `dir/www`). Returns the
    /// server (stopped when dropped) and the file's SHA-256.
    pub fn peer_http(&self, dir: &Path, port: u16, bytes: usize) -> (Proc, String) {
        let www = dir.join("www");
        fs::create_dir_all(&www).unwrap_or_else(|e| panic!("{}: {e}", www.display()));
        let file = www.join("file");
        fs::write(&file, pseudo_random(bytes, 0x4b4e_4943))
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let httpd = Proc::spawn(
            "peer httpd",
            self.peer_ns.cmd("busybox").args([
                "httpd",
                "-f",
                "-p",
                &format!("{PEER_IP}:{port}"),
                "-h",
                &www.display().to_string(),
            ]),
        );
        (httpd, sha256(&file))
    }

    /// Gives the peer's veth end the IPv6 address `peer` (a /64, no DAD) and routes each of
    /// `prefixes` via the library's uplink address `uplink`: the IPv6 half of what
    /// [`Topology::new`] sets up for IPv4.
    pub fn peer_ipv6(&self, peer: &str, uplink: &str, prefixes: &[&str]) {
        let ip = |args: &[&str]| run(self.peer_ns.cmd("ip").args(args));
        ip(&["addr", "add", &format!("{peer}/64"), "dev", "kgb", "nodad"]);
        for prefix in prefixes {
            ip(&["route", "add", prefix, "via", uplink]);
        }
    }

    /// Forgets the neighbours the peer learnt: a restarted agent's library interfaces
    /// have MACs of their own.
    pub fn flush_peer_neighbours(&self) {
        run(self
            .peer_ns
            .cmd("ip")
            .args(["neigh", "flush", "dev", "kgb"]));
    }

    /// The agent's flags for this topology with ports `vm1..=vm{ports}` in `dir`, the
    /// uplink over `uplink`.
    pub fn agent_args(
        uplink: UplinkKind,
        dir: &Path,
        ports: u8,
        port_options: &str,
    ) -> Vec<String> {
        let mut args = vec![
            format!("--uplink=up0={}", uplink.spec()),
            format!("--address=up0={UPLINK_IP}/24"),
        ];
        for n in 1..=ports {
            args.push(format!(
                "--port=vm{n}={}{port_options}",
                dir.join(format!("vm{n}.sock")).display()
            ));
            args.push(format!("--address=vm{n}={}/24", gateway_ip(n)));
        }
        args
    }
}

/// A running knic-agent.
#[derive(Debug)]
pub struct KnicAgent {
    pub proc: Proc,
    pub api: PathBuf,
    pub log: PathBuf,
}

impl KnicAgent {
    /// Starts the agent inside `ns` with `args`; its API socket and log go to `dir`.
    pub fn start(ns: &NetNs, dir: &Path, args: &[String]) -> KnicAgent {
        let api = dir.join("agent.sock");
        let log = dir.join("knic-agent.log");
        let out = fs::File::create(&log).unwrap_or_else(|e| panic!("log: {e}"));
        // `ip netns exec` execs the agent, so the child's pid is the agent's.
        let mut cmd = ns.cmd(workspace_bin("knic-agent"));
        cmd.arg("--api-socket").arg(&api).args(args).stderr(out);
        let mut proc = Proc::spawn("knic-agent", &mut cmd);
        let agent_log = log.clone();
        wait_for("knic-agent's API", Duration::from_secs(30), || {
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!(
                    "knic-agent exited ({status}):\n{}",
                    fs::read_to_string(&agent_log).unwrap_or_default()
                );
            }
            api.exists()
                && Command::new(workspace_bin("knicctl"))
                    .arg("--api-socket")
                    .arg(&api)
                    .args(["port", "list"])
                    .output()
                    .is_ok_and(|o| o.status.success())
        });
        KnicAgent { proc, api, log }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `knicctl ARGS --output json`; fails the test (with the agent's log) on a refusal.
    pub fn ctl(&self, args: &[&str]) -> Value {
        let out = Command::new(workspace_bin("knicctl"))
            .arg("--api-socket")
            .arg(&self.api)
            .args(args)
            .args(["--output", "json"])
            .output()
            .unwrap_or_else(|e| panic!("knicctl: {e}"));
        assert!(
            out.status.success(),
            "knicctl {args:?} failed: {}\nagent log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("knicctl JSON: {e}"))
    }

    /// Port `name` as `knicctl port list` shows it.
    pub fn port(&self, name: &str) -> Value {
        let ports = self.ctl(&["port", "list"]);
        ports
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no port {name}: {ports}"))
    }

    /// Port `name`'s entry of `knicctl stats`.
    pub fn port_stats(&self, name: &str) -> Value {
        let stats = self.ctl(&["stats"]);
        stats["ports"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no port {name}: {stats}"))
    }

    /// Waits until port `name`'s guest is (or is no longer) connected, and the library's
    /// carrier follows.
    pub fn wait_guest(&self, name: &str, connected: bool, timeout: Duration) {
        wait_for(
            &format!("port {name} guest_connected={connected}"),
            timeout,
            || {
                let p = self.port(name);
                p["guest_connected"] == connected && p["library_carrier"] == connected
            },
        );
    }

    /// The library kernel's interface names.
    pub fn library_links(&self) -> Vec<String> {
        let links = self.ctl(&["links"]);
        links
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Open fds, threads and resident memory of the agent process, once its fds and threads
    /// have stayed the same for five readings in a row, 100 ms apart (at most ten seconds:
    /// `SETTLED_SAMPLES`, `SETTLE_WITHIN`). A frontend's detach is seen (`wait_guest`) a moment before the
    /// serving thread has closed the last of that connection's fds, so a single reading can
    /// count one still closing, at the start or the end of a leak test. A leaked fd or thread
    /// stays, so the caller's comparison still fails on it.
    pub fn resources(&self) -> Footprint {
        let pid = self.proc.child.id();
        let deadline = std::time::Instant::now() + SETTLE_WITHIN;
        let mut last = footprint(pid);
        let mut same = 1;
        while same < SETTLED_SAMPLES && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            let now = footprint(pid);
            same = if (now.fds, now.threads, now.kernel_threads)
                == (last.fds, last.threads, last.kernel_threads)
            {
                same + 1
            } else {
                1
            };
            last = now;
        }
        last
    }
}

/// Copies per frame between guest memory and the library kernel's RAM, in either direction
/// (`to_stack`, `to_guest`): one. The vhost worker reads the guest's TX chain straight into
/// the buffers the kernel posted (`DirectRx`), and writes the kernel's TX chain straight into
/// the guest's RX buffers (`DirectTx`); the seam carries neither.
pub const COPIES_PER_FRAME: u64 = 1;

/// Asserts a port's copy accounting in direction `dir` (`to_stack`, `to_guest`): each frame
/// that crossed was copied [`COPIES_PER_FRAME`] times, and every copy beyond that belongs
/// to a frame the seam refused (all its buffers in flight), flushed, or that was lost after
/// the seam. Returns the measured copies per frame.
pub fn assert_copy_accounting(port_stats: &Value, dir: &str) -> f64 {
    let copies = COPIES_PER_FRAME;
    let n = |v: &Value| v.as_u64().unwrap_or_else(|| panic!("not a counter: {v}"));
    let c = &port_stats["copies"][dir];
    let s = &port_stats["seam"][dir];
    let frames = n(&c["frames"]);
    assert!(frames > 0, "{dir}: no frame crossed: {port_stats}");
    assert_eq!(
        n(&s["copies"]),
        0,
        "{dir}: the seam takes the sender's buffers, it copies nothing: {port_stats}"
    );
    assert_eq!(
        s["taken"], s["swaps"],
        "{dir}: every buffer the seam took was swapped out to the receiver: {port_stats}"
    );
    let all = n(&c["vhost_copies"]) + n(&c["seam_copies"]) + n(&c["library_copies"]);
    let lost =
        n(&s["full"]) + n(&s["refused"]) + n(&s["flushed"]) + n(&s["swaps"]).saturating_sub(frames);
    assert!(
        all >= copies * frames,
        "{dir}: fewer than {copies} copies per frame: {port_stats}"
    );
    assert!(
        all - copies * frames <= 2 * lost,
        "{dir}: {} copies beyond {copies} per frame, only {lost} frames lost on the way: {port_stats}",
        all - copies * frames
    );
    c["per_frame"].as_f64().unwrap_or(0.0)
}
