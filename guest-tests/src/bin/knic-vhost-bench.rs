//! `knic-vhost-bench [SECONDS]`: guest→backend packet rate of knic-vhost against DPDK's own
//! vhost-user backend, with the same sender. Not a test: it prints numbers and appends them
//! (with the date and commit) to `guest-tests/benches/results/vhost.jsonl`.
//!
//! Sender: `dpdk-testpmd` `net_virtio_user` in `txonly` mode, busy-polling on CPU 0.
//! Backends, each alone on CPU 1, in like-for-like pairs (`Uplink`), each pair in a network
//! namespace the bench creates:
//! * knic-vhost (this build's profile: run with `--release`) with a `discard:` uplink against
//!   `net_vhost` + `net_null` (`io` forwarding): the device's own rate, nothing behind it;
//! * knic-vhost into a kernel TAP against `net_vhost` + `net_tap` (the kernel discards the
//!   UDP frames);
//! * knic-vhost on AF_PACKET on a veth against `net_vhost` + `net_af_packet` on the same veth.
//!
//! knic-vhost runs twice in each pair: waiting for kicks (its default), and busy-polling its
//! TX ring (`--busy-poll-us 50`), as DPDK's backend always polls. Each backend's system calls
//! over the window are counted (`perf stat -e raw_syscalls:sys_enter`) and reported per packet.
//! * knic-agent (issue 8's path): the frames, addressed to the library port's MAC and routed
//!   (`--eth-peer`, `--tx-ip` guest → peer), cross the library's stack and leave through its
//!   AF_PACKET uplink on a veth into a peer namespace (`guest_tests::agent::Topology`).
//! * Its references, `net_vhost` in `io` forwarding into the host kernel on the same veth
//!   topology: with `net_tap`, the host kernel routing from the TAP to the veth; with
//!   `net_af_xdp` on the veth end itself (copy mode), the frames addressed to the peer's MAC
//!   and no routing on the way. Each reports what the sender got onto the ring and what
//!   reached the peer (its veth's `rx_packets`): Mpps, and Gbit/s of frames.
//!
//! The rate is the sender's `Tx-pps` (testpmd `--stats-period 1`), averaged over the
//! measuring window after a warm-up: packets the backend actually took off the ring, since a
//! full ring makes testpmd count TX-dropped instead. It is cross-checked against the
//! receiver's count over the same window: knic-vhost's `tx_packets`, net_vhost's `Rx-pps`.
//!
//!   cargo build --release -p vhost-backend -p guest-tests --bins
//!   sudo target/release/knic-vhost-bench 5
//!
//! `KNIC_BENCH_ONLY=discard` (or `tap`, `packet`, `agent` for the agent and its references,
//! comma-separated) runs only those, and records nothing: a quick look at one pair, whose
//! printed lines are the result.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use guest_tests::agent::{HOST_TAP_MAC, KnicAgent, PEER_IP, Topology, UplinkKind, guest_ip};
use guest_tests::bench::{RunRecord, append_jsonl, pin, testpmd};
use test_support::chart::{BarGroup, bar_chart};

use guest_tests::{KnicVhost, NetNs, Scratch, require_root, require_tool, run, wait_for};

/// CPU of the sender (both of its lcores: the forwarding one busy-polls, main sleeps).
const SENDER_CPU: u32 = 0;
/// CPU of the backend under test.
const BACKEND_CPU: u32 = 1;
/// Frame sizes without FCS (`--txpkts`).
const FRAMES: [u32; 2] = [64, 1500];
const WARMUP: Duration = Duration::from_secs(3);

/// Every `Tx-pps:` value testpmd printed so far.
fn tx_pps(log: &Path) -> Vec<u64> {
    pps(log, "Tx-pps:")
}

/// Every value after `key` (`Tx-pps:`, `Rx-pps:`) in testpmd's log so far.
fn pps(log: &Path, key: &str) -> Vec<u64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .split(key)
        .skip(1)
        .filter_map(|s| s.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Runs the virtio-user sender against `socket` for warm-up + `secs`; returns the mean
/// Tx-pps of the measuring window, and calls `mark` at its start and end. `routed` gives
/// the frames a destination MAC and addresses (`--eth-peer`, `--tx-ip`) for a backend that
/// routes them rather than discarding them.
fn measure(
    socket: &Path,
    frame: u32,
    secs: u64,
    dir: &Path,
    tag: &str,
    routed: Option<&Routed>,
    mut mark: impl FnMut(),
) -> f64 {
    let log = dir.join(format!("testpmd-{tag}.log"));
    let mut extra = vec![format!("--txpkts={frame}")];
    if let Some(r) = routed {
        extra.push(format!("--eth-peer=0,{}", r.gateway_mac));
        extra.push(format!("--tx-ip={},{}", guest_ip(1), PEER_IP));
    }
    let mut tx = testpmd(
        tag,
        SENDER_CPU,
        &[&format!(
            "net_virtio_user0,path={},queues=1",
            socket.display()
        )],
        "txonly",
        &extra,
        dir,
        None,
    );
    wait_for("the sender to start", Duration::from_secs(30), || {
        tx.assert_running();
        tx_pps(&log).iter().any(|&p| p > 0)
    });
    std::thread::sleep(WARMUP);
    let skip = tx_pps(&log).len();
    mark();
    std::thread::sleep(Duration::from_secs(secs));
    mark();
    let window: Vec<u64> = tx_pps(&log).into_iter().skip(skip).collect();
    assert!(
        tx.stop("-INT", Duration::from_secs(30)),
        "sender did not stop"
    );
    assert!(!window.is_empty(), "no stats lines in {}", log.display());
    window.iter().sum::<u64>() as f64 / window.len() as f64
}

/// The like-for-like pairs: knic-vhost with an uplink, and DPDK's `net_vhost` forwarding
/// (`io`) into the matching DPDK port, on the same sender in the same run.
#[derive(Debug, Clone, Copy)]
enum Uplink {
    /// Nothing behind the device: knic's `discard:` against `net_null` (the device's own rate).
    Discard,
    /// A kernel TAP in a namespace (the kernel discards the UDP frames): knic's `tap:` (one
    /// `writev` per frame) against `net_tap`.
    Tap,
    /// AF_PACKET on one end of a veth pair: knic's `packet:` (one `sendmmsg` per batch)
    /// against `net_af_packet`.
    Packet,
}

const UPLINKS: [Uplink; 3] = [Uplink::Discard, Uplink::Tap, Uplink::Packet];

impl Uplink {
    fn name(self) -> &'static str {
        match self {
            Self::Discard => "discard",
            Self::Tap => "tap",
            Self::Packet => "packet",
        }
    }

    /// The namespace either backend runs in, with the interface it needs (a veth pair for
    /// AF_PACKET; a TAP is made by the backend and brought up after).
    fn namespace(self) -> NetNs {
        let ns = NetNs::new("bench");
        if let Self::Packet = self {
            run(ns
                .cmd("ip")
                .args(["link", "add", "kva", "type", "veth", "peer", "name", "kvb"]));
            for ifname in ["kva", "kvb"] {
                run(ns.cmd("ip").args(["link", "set", ifname, "up"]));
            }
        }
        ns
    }

    /// The plot's labels for DPDK, knic-vhost and knic-vhost busy-polling.
    fn bars(self) -> [&'static str; 3] {
        match self {
            Self::Discard => ["DPDK null", "knic discard", "knic disc. poll"],
            Self::Tap => ["DPDK TAP", "knic TAP", "knic TAP poll"],
            Self::Packet => ["DPDK PKT", "knic PKT", "knic PKT poll"],
        }
    }

    fn colours(self) -> [&'static str; 3] {
        match self {
            Self::Discard => ["#888", "#3a6", "#2a5"],
            Self::Tap => ["#aaa", "#4a7", "#393"],
            Self::Packet => ["#bbb", "#6b9", "#5a8"],
        }
    }

    fn knic_spec(self) -> &'static str {
        match self {
            Self::Discard => "discard:",
            Self::Tap => "tap:kvtap0",
            Self::Packet => "packet:kva",
        }
    }

    fn dpdk_vdev(self) -> &'static str {
        match self {
            Self::Discard => "net_null0",
            Self::Tap => "net_tap0,iface=kvtap0",
            Self::Packet => "net_af_packet0,iface=kva",
        }
    }

    /// Brings up the TAP the backend created.
    fn after_start(self, ns: &NetNs) {
        if let Self::Tap = self {
            wait_for("the TAP", Duration::from_secs(30), || {
                ns.cmd("ip")
                    .args(["link", "show", "kvtap0"])
                    .output()
                    .is_ok_and(|o| o.status.success())
            });
            run(ns.cmd("ip").args(["link", "set", "kvtap0", "up"]));
        }
    }
}

/// Busy-poll budget of the knic-vhost runs that poll, as DPDK's backend always does (Linux's
/// own `net.core.busy_poll` suggestion is 50 µs).
const BUSY_POLL_US: &str = "50";

fn knic_side(uplink: Uplink, frame: u32, secs: u64, busy_poll: bool) -> Rate {
    let ns = uplink.namespace();
    let dir = Scratch::new(&format!("bench-knic-{}-{frame}", uplink.name()));
    let extra: &[&str] = if busy_poll {
        &["--busy-poll-us", BUSY_POLL_US]
    } else {
        &[]
    };
    let kv = KnicVhost::start_with_args(&ns, uplink.knic_spec(), &dir.0, 1, extra);
    uplink.after_start(&ns);
    // Every thread, and those it starts later (the queue-pair workers), on the backend CPU.
    pin(kv.proc.child.id(), BACKEND_CPU);
    let mut marks = Vec::new();
    let mut syscalls = SyscallCount::new(&dir.0, "knic");
    let pid = kv.proc.child.id();
    let pps = measure(&kv.socket, frame, secs, &dir.0, "knic", None, || {
        marks.push((
            std::time::Instant::now(),
            kv.stats()["tx_packets"].as_u64().unwrap_or(0),
        ));
        syscalls.mark(pid);
    });
    let packets = (marks[1].1 - marks[0].1) as f64;
    Rate {
        sent_pps: pps,
        backend_pps: packets / (marks[1].0 - marks[0].0).as_secs_f64(),
        syscalls_per_packet: syscalls.total() / packets,
    }
}

/// One backend's rate: what the sender got onto the ring, what the backend counted over the
/// same window, and the backend's system calls per packet.
struct Rate {
    sent_pps: f64,
    backend_pps: f64,
    syscalls_per_packet: f64,
}

/// `net_vhost` + the matching DPDK port in `io` forwarding: the rate from the sender, and
/// from `net_vhost`'s own `Rx-pps` (port 0 of two) over the same window.
fn dpdk_side(uplink: Uplink, frame: u32, secs: u64) -> Rate {
    let ns = uplink.namespace();
    let dir = Scratch::new(&format!("bench-dpdk-{}-{frame}", uplink.name()));
    let socket = dir.0.join("vhost.sock");
    let mut fwd = testpmd(
        "vhost",
        BACKEND_CPU,
        &[
            &format!("net_vhost0,iface={},queues=1", socket.display()),
            uplink.dpdk_vdev(),
        ],
        "io",
        &[],
        &dir.0,
        Some(&ns),
    );
    wait_for("net_vhost's socket", Duration::from_secs(30), || {
        fwd.assert_running();
        socket.exists()
    });
    uplink.after_start(&ns);
    let fwd_log = dir.0.join("testpmd-vhost.log");
    // testpmd prints each port's stats in turn: net_vhost's are every other `Rx-pps`.
    let vhost_rx = || -> Vec<u64> { pps(&fwd_log, "Rx-pps:").into_iter().step_by(2).collect() };
    let mut marks = Vec::new();
    let mut syscalls = SyscallCount::new(&dir.0, "dpdk");
    let pid = fwd.child.id();
    let sent = measure(&socket, frame, secs, &dir.0, "dpdk", None, || {
        marks.push(vhost_rx().len());
        syscalls.mark(pid);
    });
    let seen: Vec<u64> = vhost_rx()
        .into_iter()
        .skip(marks[0])
        .take(marks[1] - marks[0])
        .collect();
    let received = seen.iter().sum::<u64>() as f64 / seen.len().max(1) as f64;
    assert!(
        fwd.stop("-INT", Duration::from_secs(30)),
        "net_vhost + {} did not stop",
        uplink.dpdk_vdev()
    );
    Rate {
        sent_pps: sent,
        backend_pps: received,
        syscalls_per_packet: syscalls.total() / (received * secs as f64),
    }
}

/// System calls a process (all its threads) makes over a window: `perf stat` counting
/// `raw_syscalls:sys_enter`, started at the window's first mark and stopped at its second.
struct SyscallCount {
    perf: Option<std::process::Child>,
    out: PathBuf,
}

impl SyscallCount {
    fn new(dir: &Path, tag: &str) -> Self {
        Self {
            perf: None,
            out: dir.join(format!("perf-syscalls-{tag}.csv")),
        }
    }

    /// The first call starts counting `pid`, the second stops.
    fn mark(&mut self, pid: u32) {
        match self.perf.take() {
            None => {
                let child = Command::new(require_tool("perf"))
                    .args(["stat", "-x,", "-e", "raw_syscalls:sys_enter", "-o"])
                    .arg(&self.out)
                    .args(["-p", &pid.to_string()])
                    .spawn()
                    .unwrap_or_else(|e| panic!("perf stat: {e}"));
                self.perf = Some(child);
            }
            Some(mut child) => {
                run(Command::new("kill").args(["-INT", &child.id().to_string()]));
                let _ = child.wait();
            }
        }
    }

    /// The count of the window (NaN when perf could not count).
    fn total(&self) -> f64 {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .find(|l| l.contains("raw_syscalls:sys_enter"))
            .and_then(|l| l.split(',').next()?.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    }
}

/// Where a routed frame goes first: the MAC of the router's interface facing the sender.
struct Routed {
    gateway_mac: String,
}

/// A rate measured at both ends: what the sender got onto the ring, and what reached the
/// peer namespace (its veth's `rx_packets` over the same window).
#[derive(Debug, Clone, Copy)]
struct Delivered {
    sent_pps: f64,
    peer_pps: f64,
}

/// Calls `measure` with marks that count the peer's received frames.
fn measure_delivered(
    socket: &Path,
    frame: u32,
    secs: u64,
    dir: &Path,
    tag: &str,
    topo: &Topology,
    routed: &Routed,
) -> Delivered {
    let mut marks = Vec::new();
    let sent_pps = measure(socket, frame, secs, dir, tag, Some(routed), || {
        marks.push((
            std::time::Instant::now(),
            topo.peer_ns.if_stat("kgb", "rx_packets"),
        ))
    });
    let peer_pps = (marks[1].1 - marks[0].1) as f64 / (marks[1].0 - marks[0].0).as_secs_f64();
    Delivered { sent_pps, peer_pps }
}

/// testpmd → knic-agent (vhost-user port → library stack, routed → AF_PACKET uplink on
/// a veth) → the peer namespace, where the UDP frames are discarded. The agent runs alone on
/// the backend CPU.
fn agent_side(frame: u32, secs: u64) -> Delivered {
    let topo = Topology::new("bench-ag");
    let dir = Scratch::new(&format!("bench-agent-{frame}"));
    let agent = KnicAgent::start(
        &topo.agent_ns,
        &dir.0,
        &Topology::agent_args(UplinkKind::Packet, &dir.0, 1, ""),
    );
    pin(agent.proc.child.id(), BACKEND_CPU);
    let gateway_mac = agent.port("vm1")["library_mac"]
        .as_str()
        .unwrap_or_else(|| panic!("no library MAC for vm1"))
        .to_owned();
    measure_delivered(
        &dir.0.join("vm1.sock"),
        frame,
        secs,
        &dir.0,
        "agent",
        &topo,
        &Routed { gateway_mac },
    )
}

/// A reference the agent is compared with: DPDK `net_vhost` (`io` forwarding, on the
/// backend CPU) and `vdev` into the host kernel, on the same veth topology to the peer.
#[derive(Debug, Clone, Copy)]
struct HostReference {
    /// The results' key.
    name: &'static str,
    /// The plot's label and colour.
    label: &'static str,
    colour: &'static str,
    vdev: &'static str,
    /// Whether the host kernel routes from a TAP (`kbtap0`) standing for port `vm1`;
    /// otherwise the frames go to the peer's MAC with no routing on the way.
    routed: bool,
}

const HOST_REFERENCES: [HostReference; 2] = [
    // `net_tap`: the host kernel's IPv4 forwarding routes from the TAP (in the agent's
    // namespace, as the library is in the agent's) to the veth and the peer.
    HostReference {
        name: "dpdk_vhost_tap_forward",
        label: "DPDK TAP fwd",
        colour: "#c72",
        vdev: "net_tap0,iface=kbtap0",
        routed: true,
    },
    // `net_af_xdp` on the veth end `kga` (copy mode, DPDK loads its XDP program): the
    // frames are transmitted straight onto the veth, so the host kernel's part is the veth
    // and the peer's receive.
    HostReference {
        name: "dpdk_vhost_af_xdp",
        label: "DPDK AF_XDP",
        colour: "#a52",
        vdev: "net_af_xdp0,iface=kga,start_queue=0,queue_count=1",
        routed: false,
    },
];

/// testpmd → DPDK `net_vhost` + `reference`'s port → the host kernel → the peer.
fn dpdk_reference_side(reference: HostReference, frame: u32, secs: u64) -> Delivered {
    let topo = Topology::new("bench-dt");
    let dir = Scratch::new(&format!("bench-{}-{frame}", reference.name));
    let socket = dir.0.join("vhost.sock");
    let ns = &topo.agent_ns;
    if reference.routed {
        topo.host_forwarding();
    }
    let mut fwd = testpmd(
        "fwd",
        BACKEND_CPU,
        &[
            &format!("net_vhost0,iface={},queues=1", socket.display()),
            reference.vdev,
        ],
        "io",
        &[],
        &dir.0,
        Some(ns),
    );
    wait_for("net_vhost's socket", Duration::from_secs(30), || {
        fwd.assert_running();
        socket.exists()
    });
    let gateway_mac = if reference.routed {
        topo.route_tap("kbtap0", HOST_TAP_MAC);
        HOST_TAP_MAC.to_owned()
    } else {
        topo.peer_mac()
    };
    let d = measure_delivered(
        &socket,
        frame,
        secs,
        &dir.0,
        reference.name,
        &topo,
        &Routed { gateway_mac },
    );
    assert!(
        fwd.stop("-INT", Duration::from_secs(30)),
        "net_vhost + {} did not stop",
        reference.vdev
    );
    d
}

fn main() {
    require_root();
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let results_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/results");
    // The machine is shared: the load when the run began goes with its numbers.
    let RunRecord {
        date,
        commit,
        profile,
        load: load_now,
    } = RunRecord::now(&results_dir);
    let only = std::env::var("KNIC_BENCH_ONLY").ok();
    let selected = |u: &Uplink| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|n| n == u.name()))
    };
    let mut rows = Vec::new();
    for frame in FRAMES {
        let mut row = serde_json::json!({ "frame_bytes": frame });
        for uplink in UPLINKS.iter().copied().filter(selected) {
            let name = uplink.name();
            let dpdk = dpdk_side(uplink, frame, secs);
            for busy_poll in [false, true] {
                let knic = knic_side(uplink, frame, secs, busy_poll);
                let ratio = knic.sent_pps / dpdk.sent_pps;
                let key = if busy_poll {
                    format!("{name}_poll")
                } else {
                    name.to_string()
                };
                let _ = writeln!(
                    std::io::stdout(),
                    "{frame:>5} B  {key:<12} net_vhost+{} {:.3} Mpps (its Rx-pps {:.3}, {:.3} syscalls/packet), knic-vhost {:.3} Mpps (device count {:.3}, {:.3} syscalls/packet), knic/DPDK {ratio:.3}",
                    uplink.dpdk_vdev(),
                    dpdk.sent_pps / 1e6,
                    dpdk.backend_pps / 1e6,
                    dpdk.syscalls_per_packet,
                    knic.sent_pps / 1e6,
                    knic.backend_pps / 1e6,
                    knic.syscalls_per_packet,
                );
                row[format!("knic_vhost_{key}_mpps")] = (knic.sent_pps / 1e6).into();
                row[format!("knic_vhost_{key}_device_mpps")] = (knic.backend_pps / 1e6).into();
                row[format!("knic_vhost_{key}_syscalls_per_packet")] =
                    knic.syscalls_per_packet.into();
                row[format!("ratio_{key}")] = ratio.into();
            }
            row[format!("dpdk_vhost_{name}_mpps")] = (dpdk.sent_pps / 1e6).into();
            row[format!("dpdk_vhost_{name}_rx_mpps")] = (dpdk.backend_pps / 1e6).into();
            row[format!("dpdk_vhost_{name}_syscalls_per_packet")] = dpdk.syscalls_per_packet.into();
        }
        let agent_rows = only
            .as_deref()
            .is_none_or(|o| o.split(',').any(|n| n == "agent"));
        if !agent_rows {
            continue;
        }
        let measured = [("agent", agent_side(frame, secs))].into_iter().chain(
            HOST_REFERENCES
                .iter()
                .map(|&r| (r.name, dpdk_reference_side(r, frame, secs))),
        );
        for (name, d) in measured {
            let gbps = d.peer_pps * f64::from(frame) * 8.0 / 1e9;
            let _ = writeln!(
                std::io::stdout(),
                "{frame:>5} B  {name:<24} sent {:.3} Mpps, reached the peer {:.3} Mpps ({gbps:.3} Gbit/s)",
                d.sent_pps / 1e6,
                d.peer_pps / 1e6,
            );
            row[format!("{name}_sent_mpps")] = (d.sent_pps / 1e6).into();
            row[format!("{name}_peer_mpps")] = (d.peer_pps / 1e6).into();
            row[format!("{name}_peer_gbps")] = gbps.into();
        }
        for reference in HOST_REFERENCES {
            let name = reference.name;
            let ratio = row["agent_peer_mpps"].as_f64().unwrap_or(0.0)
                / row[format!("{name}_peer_mpps")]
                    .as_f64()
                    .unwrap_or(f64::NAN);
            let key = name.strip_prefix("dpdk_vhost_").unwrap_or(name);
            row[format!("ratio_agent_to_dpdk_{key}")] = ratio.into();
        }
        rows.push(row);
    }
    if only.is_some() {
        let _ = writeln!(
            std::io::stdout(),
            "KNIC_BENCH_ONLY run at {commit} (load {load_now}): not recorded"
        );
        return;
    }
    let line = serde_json::json!({
        "date": date,
        "loadavg_at_start": load_now,
        "commit": commit,
        "profile": profile,
        "seconds": secs,
        "sender": "dpdk-testpmd net_virtio_user txonly, CPU 0",
        "backend_cpu": BACKEND_CPU,
        "results": rows,
    });
    let path = results_dir.join("vhost.jsonl");
    append_jsonl(&path, &line);
    let _ = writeln!(std::io::stdout(), "appended to {}", path.display());

    // The plot of this run: Mpps per backend, one group per frame size.
    let mpps = |row: &serde_json::Value, key: &str| row[key].as_f64().unwrap_or(0.0);
    let labels: Vec<String> = rows
        .iter()
        .map(|r| format!("{} B frames, Mpps", r["frame_bytes"]))
        .collect();
    let groups: Vec<BarGroup<'_>> = rows
        .iter()
        .zip(&labels)
        .map(|(row, label)| BarGroup {
            label,
            bars: UPLINKS
                .iter()
                .flat_map(|u| {
                    let (n, [dpdk, knic, poll], [c0, c1, c2]) = (u.name(), u.bars(), u.colours());
                    [
                        (dpdk, mpps(row, &format!("dpdk_vhost_{n}_mpps")), c0),
                        (knic, mpps(row, &format!("knic_vhost_{n}_mpps")), c1),
                        (poll, mpps(row, &format!("knic_vhost_{n}_poll_mpps")), c2),
                    ]
                })
                .chain([("agent→peer", mpps(row, "agent_peer_mpps"), "#27c")])
                .chain(HOST_REFERENCES.iter().map(|r| {
                    (
                        r.label,
                        mpps(row, &format!("{}_peer_mpps", r.name)),
                        r.colour,
                    )
                }))
                .collect(),
        })
        .collect();
    let svg = bar_chart(
        "virtio-user txonly into each backend (same sender, one run)",
        &format!("commit {commit}, {date}, load {load_now}"),
        &groups,
    );
    let plot = results_dir.join("vhost.svg");
    std::fs::write(&plot, svg).unwrap_or_else(|e| panic!("{}: {e}", plot.display()));
    let _ = writeln!(std::io::stdout(), "drew {}", plot.display());
}
