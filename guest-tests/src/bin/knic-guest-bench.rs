//! `knic-guest-bench`: one QEMU (TCG) guest's iperf3 to a peer through knic-agent, against
//! the same guest through DPDK `net_vhost` + `net_tap` and the host kernel (issue 8's guest
//! benchmark). Not a test: it prints a table and appends the run (with its date, commit and
//! load) to `guest-tests/benches/results/guest.jsonl`, and draws `guest.svg`.
//!
//! Every path boots the same initramfs (busybox, Debian's `iperf3` and `ethtool` with their
//! libraries) on Debian's cloud kernel, one vCPU, QEMU pinned to CPU 0 and the backend to
//! CPU 1, and the guest (`10.210.1.2`) runs `iperf3 -c` to an `iperf3 -s` in the peer
//! namespace (`10.210.0.1`) behind a veth (`guest_tests::agent::Topology`):
//! * `agent-packet`, `agent-xdp`: the guest → knic-agent's vhost-user port → the library's
//!   stack (routing) → its AF_PACKET or AF_XDP uplink on the veth → the peer;
//! * `dpdk-tap`: the guest → `dpdk-testpmd` `net_vhost` + `net_tap` in `io` forwarding →
//!   the host kernel routing from the TAP to the veth → the peer. `net_vhost` offers no
//!   HOST_TSO4 by default, so the guest's TSO stays off there (see `Backend::start`);
//! * `knic-tap`: the guest → knic-vhost into a TAP → the same host kernel routing.
//!
//! Each path runs guest TSO on and off (`ethtool -K eth0 tso on|off` inside the guest; the
//! state the guest then reports is recorded, as a backend that does not offer HOST_TSO4
//! leaves it off), each guest → peer and, unless `--no-reverse`, peer → guest (`iperf3
//! -R`). Throughput is the receiver's (`end.sum_received` of the client's `--json`
//! report). Host CPU seconds per GB are the backend process's user + system time
//! (`/proc/PID/stat`, every thread) over the interval in which the peer's veth moved data,
//! divided by the bytes it moved then. That time includes the kernel work done in the
//! backend's system calls and the softirqs run on their return (TAP or veth transmit, the
//! host's forwarding, often the peer's receive): for the host kernel paths the forwarding
//! is mostly counted there. Not counted: ksoftirqd, interrupts, QEMU (recorded apart, as the
//! guest's cost), the peer's iperf3.
//!
//!   cargo build --release -p vhost-backend -p knic-agent -p guest-tests --bins
//!   target/release/knic-guest-bench --seconds 10        # as root

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use guest_tests::agent::{
    HOST_TAP_MAC, KnicAgent, PEER_IP, Topology, UplinkKind, gateway_ip, guest_ip,
};
use guest_tests::bench::{
    Busy, IperfReceived, RunRecord, Sample, append_jsonl, clock_ticks_per_second, cpu_ticks,
    interface_bytes, pin, testpmd,
};
use guest_tests::qemu::{Guest, QemuGuest};
use guest_tests::{KnicVhost, Proc, Scratch, initramfs, require_root, require_tool, wait_for};
use test_support::chart::{BarGroup, bar_chart};

/// CPU of the guest (QEMU, every thread).
const GUEST_CPU: u32 = 0;
/// CPU of the backend under test.
const BACKEND_CPU: u32 = 1;
/// How long a TCG guest may take to boot on a loaded machine.
const BOOT: Duration = Duration::from_secs(300);
/// The guest's command port: it runs what arrives there, one connection at a time.
const COMMAND_PORT: &str = "5999";
/// The sampling period of the CPU and byte counters during a test.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// A step between samples counts as transferring when the peer's veth moved at least this
/// much (10 Mbit/s at `SAMPLE_EVERY`); iperf3's control connection moves far less.
const MOVING_BYTES: u64 = 256 << 10;

/// One guest's iperf3 through each path, TSO on and off, side by side in one run.
#[derive(Debug, Parser)]
#[command(long_about = None)]
struct Args {
    /// Seconds each iperf3 test runs (`iperf3 -t`).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The paths to measure, in this order.
    #[arg(long, value_delimiter = ',', default_values_t = [GuestPath::AgentPacket, GuestPath::AgentXdp, GuestPath::DpdkTap, GuestPath::KnicTap])]
    paths: Vec<GuestPath>,
    /// Guest → peer only (no `iperf3 -R`).
    #[arg(long)]
    no_reverse: bool,
    /// Print the results without appending them to `guest.jsonl` or drawing the plot.
    #[arg(long)]
    no_record: bool,
}

/// Where the guest's frames go on their way to the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GuestPath {
    /// knic-agent, the library's stack, the AF_PACKET uplink.
    AgentPacket,
    /// knic-agent, the library's stack, the AF_XDP uplink (copy mode on the veth).
    AgentXdp,
    /// DPDK `net_vhost` + `net_tap` (`io` forwarding), the host kernel's forwarding.
    DpdkTap,
    /// knic-vhost into a TAP, the host kernel's forwarding.
    KnicTap,
}

impl std::fmt::Display for GuestPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key())
    }
}

impl GuestPath {
    fn key(self) -> &'static str {
        match self {
            Self::AgentPacket => "agent-packet",
            Self::AgentXdp => "agent-xdp",
            Self::DpdkTap => "dpdk-tap",
            Self::KnicTap => "knic-tap",
        }
    }

    fn colour(self) -> &'static str {
        match self {
            Self::AgentPacket => "#27c",
            Self::AgentXdp => "#49e",
            Self::DpdkTap => "#c72",
            Self::KnicTap => "#3a6",
        }
    }

    fn is_agent(self) -> bool {
        matches!(self, Self::AgentPacket | Self::AgentXdp)
    }
}

/// A backend serving the guest's vhost-user socket; dropping it stops it.
enum Backend {
    Agent(KnicAgent),
    Dpdk(Proc),
    KnicVhost(KnicVhost),
}

impl Backend {
    /// Starts `path`'s backend in the topology's agent namespace; returns it and the socket
    /// QEMU dials.
    fn start(path: GuestPath, topo: &Topology, dir: &Path) -> (Backend, PathBuf) {
        let ns = &topo.agent_ns;
        let (backend, socket) = match path {
            GuestPath::AgentPacket | GuestPath::AgentXdp => {
                let uplink = if path == GuestPath::AgentXdp {
                    UplinkKind::Xdp
                } else {
                    UplinkKind::Packet
                };
                topo.prepare_peer(uplink);
                let agent = KnicAgent::start(ns, dir, &Topology::agent_args(uplink, dir, 1, ""));
                (Backend::Agent(agent), dir.join("vm1.sock"))
            }
            GuestPath::DpdkTap => {
                topo.host_forwarding();
                let socket = dir.join("vhost.sock");
                // Without `tso=1` net_vhost offers no HOST_TSO4: the guest segments.
                // With it (and net_tap's TSO offload on, ext-buffer or not) net_tap
                // counted a TX error for each TSO frame in DPDK 22.11 and ~2 Mbit/s went
                // through, so the working reference is the default.
                let mut fwd = testpmd(
                    "guest",
                    BACKEND_CPU,
                    &[
                        &format!("net_vhost0,iface={},queues=1", socket.display()),
                        "net_tap0,iface=kbtap0",
                    ],
                    "io",
                    &[],
                    dir,
                    Some(ns),
                );
                wait_for("net_vhost's socket", Duration::from_secs(30), || {
                    fwd.assert_running();
                    socket.exists()
                });
                topo.route_tap("kbtap0", HOST_TAP_MAC);
                (Backend::Dpdk(fwd), socket)
            }
            GuestPath::KnicTap => {
                topo.host_forwarding();
                let kv = KnicVhost::start(ns, "tap:kvtap0", dir);
                topo.route_tap("kvtap0", HOST_TAP_MAC);
                let socket = kv.socket.clone();
                (Backend::KnicVhost(kv), socket)
            }
        };
        pin(backend.pid(), BACKEND_CPU);
        (backend, socket)
    }

    fn pid(&self) -> u32 {
        match self {
            Backend::Agent(a) => a.proc.child.id(),
            Backend::Dpdk(p) => p.child.id(),
            Backend::KnicVhost(kv) => kv.proc.child.id(),
        }
    }

    /// The backend's log, for a failure's message.
    fn log(&self, dir: &Path) -> String {
        let file = match self {
            Backend::Agent(_) => "knic-agent.log",
            Backend::Dpdk(_) => "testpmd-guest.log",
            Backend::KnicVhost(_) => "knic-vhost.log",
        };
        std::fs::read_to_string(dir.join(file)).unwrap_or_default()
    }
}

/// The guest's `/init` tail: its address behind port `vm1`, then a loop running each
/// command file the peer sends to [`COMMAND_PORT`].
fn guest_script() -> String {
    format!(
        "ip link set eth0 up\nip addr add {}/24 dev eth0\nip route add default via {}\n\
         echo KNIC_UP\n\
         while true; do nc -l -p {COMMAND_PORT} > /tmp/cmd; sh /tmp/cmd; done",
        guest_ip(1),
        gateway_ip(1)
    )
}

/// One iperf3 test: guest TSO on or off, guest → peer or back.
#[derive(Debug, Clone, Copy)]
struct Case {
    tso: bool,
    reverse: bool,
}

impl Case {
    fn tso_word(self) -> &'static str {
        if self.tso { "on" } else { "off" }
    }

    /// The direction: (results' key, label).
    fn way(self) -> (&'static str, &'static str) {
        [
            ("guest_to_peer", "guest → peer"),
            ("peer_to_guest", "peer → guest"),
        ][usize::from(self.reverse)]
    }

    /// The results' key: `tso_on_guest_to_peer`.
    fn key(self) -> String {
        format!("tso_{}_{}", self.tso_word(), self.way().0)
    }

    fn label(self) -> String {
        format!("TSO {}, {}", self.tso_word(), self.way().1)
    }

    /// The guest's commands for test number `n`, lasting `secs`; its report is printed on
    /// the console between markers.
    fn guest_commands(self, n: usize, secs: u64) -> String {
        format!(
            "ethtool -K eth0 tso {tso} >/dev/null 2>&1\n\
             echo KNIC_C{n}_TSO=$(ethtool -k eth0 | grep '^tcp-segmentation-offload:' | cut -d' ' -f2)\n\
             iperf3 -c {PEER_IP} -t {secs} -i 0 -J {reverse} > /tmp/iperf.json 2>&1\n\
             echo KNIC_C{n}_JSON_BEGIN; cat /tmp/iperf.json; echo KNIC_C{n}_JSON_END\n",
            tso = self.tso_word(),
            reverse = if self.reverse { "-R" } else { "" },
        )
    }
}

/// What one test measured.
#[derive(Debug, Clone)]
struct Outcome {
    /// The guest's TSO state during the test, as its `ethtool -k` said.
    guest_tso: String,
    received: IperfReceived,
    backend: Option<Busy>,
    qemu: Option<Busy>,
}

/// The text between the last `begin` and the `end` after it.
fn between<'a>(text: &'a str, begin: &str, end: &str) -> Option<&'a str> {
    let from = text.rfind(begin)? + begin.len();
    let to = text[from..].find(end)? + from;
    Some(text[from..to].trim())
}

/// One guest booted on `path`'s backend, running every case.
struct Run {
    topo: Topology,
    dir: Scratch,
    backend: Backend,
    guest: Guest,
    server: Proc,
    cases_sent: usize,
    ticks_per_second: f64,
    secs: u64,
}

impl Run {
    fn boot(path: GuestPath, initrd: &Path, secs: u64) -> Run {
        let tag = format!("gb-{}", path.key());
        let topo = Topology::new(&tag);
        let dir = Scratch::new(&tag);
        let (backend, socket) = Backend::start(path, &topo, &dir.0);
        let mut server = topo.peer_ns.cmd(require_tool("iperf3"));
        server.args(["-s", "-B", PEER_IP]).stdout(
            std::fs::File::create(dir.0.join("iperf3-server.log"))
                .unwrap_or_else(|e| panic!("iperf3 server log: {e}")),
        );
        let server = Proc::spawn("iperf3 -s", &mut server);
        let mut guest = QemuGuest::new(initrd, &socket, &dir.0.join("console.log")).spawn();
        pin(guest.vm.child.id(), GUEST_CPU);
        guest.wait("KNIC_UP", BOOT, || backend.log(&dir.0));
        if let Backend::Agent(agent) = &backend {
            agent.wait_guest("vm1", true, Duration::from_secs(60));
        }
        Run {
            topo,
            dir,
            backend,
            guest,
            server,
            cases_sent: 0,
            ticks_per_second: clock_ticks_per_second(),
            secs,
        }
    }

    /// Sends the guest a command file from the peer, retrying until the guest listens.
    fn send(&self, commands: &str) {
        let file = self.dir.0.join("cmd");
        let cat = self.dir.0.join("send-cmd.sh");
        std::fs::write(&file, commands).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&cat, format!("#!/bin/sh\nexec cat {}\n", file.display()))
            .unwrap_or_else(|e| panic!("{e}"));
        guest_tests::run(std::process::Command::new("chmod").arg("+x").arg(&cat));
        let to = guest_ip(1);
        wait_for(
            "the guest to take its command",
            Duration::from_secs(120),
            || {
                self.topo
                    .peer_ns
                    .cmd("busybox")
                    .args(["nc", &to, COMMAND_PORT, "-e"])
                    .arg(&cat)
                    .status()
                    .is_ok_and(|s| s.success())
            },
        );
    }

    fn case(&mut self, case: Case) -> Result<Outcome, String> {
        self.cases_sent += 1;
        let n = self.cases_sent;
        let backend_pid = self.backend.pid();
        let qemu_pid = self.guest.vm.child.id();
        let server_pid = self.server.child.id();
        let reading = |start: Instant, pid: u32| -> Option<Sample> {
            Some(Sample {
                at: start.elapsed().as_secs_f64(),
                cpu_ticks: cpu_ticks(pid)?,
                bytes: interface_bytes(server_pid, "kgb")?,
            })
        };
        let start = Instant::now();
        let (mut backend, mut qemu) = (Vec::new(), Vec::new());
        self.send(&case.guest_commands(n, self.secs));
        let end = format!("KNIC_C{n}_JSON_END");
        let deadline = start + Duration::from_secs(self.secs + 120);
        while !self.guest.text().contains(&end) {
            if Instant::now() > deadline {
                return Err(format!("no {end} within {} s", self.secs + 120));
            }
            if !self.guest.running() {
                return Err(format!("QEMU exited:\n{}", self.guest.text()));
            }
            backend.extend(reading(start, backend_pid));
            qemu.extend(reading(start, qemu_pid));
            std::thread::sleep(SAMPLE_EVERY);
        }
        let text = self.guest.text();
        let json = between(&text, &format!("KNIC_C{n}_JSON_BEGIN"), &end)
            .ok_or_else(|| format!("no report of test {n}"))?;
        let received = IperfReceived::parse(json).map_err(|e| format!("{e}: {json}"))?;
        Ok(Outcome {
            guest_tso: text
                .lines()
                .find_map(|l| l.trim().strip_prefix(&format!("KNIC_C{n}_TSO=")))
                .unwrap_or("?")
                .to_owned(),
            received,
            backend: Busy::of(&backend, MOVING_BYTES, self.ticks_per_second),
            qemu: Busy::of(&qemu, MOVING_BYTES, self.ticks_per_second),
        })
    }
}

fn progress(line: &str) {
    let _ = writeln!(std::io::stderr(), "knic-guest-bench: {line}");
}

fn main() {
    let args = Args::parse();
    require_root();
    require_tool("xz");
    let iperf3 = require_tool("iperf3");
    let ethtool = require_tool("ethtool");
    let results_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/results");
    let record = RunRecord::now(&results_dir);
    let (_, modules) = initramfs::cloud_kernel();
    let image = Scratch::new("gb-image");
    let initrd = image.0.join("initramfs.cpio");
    initramfs::build_with_tools(&initrd, &modules, &guest_script(), &[&iperf3, &ethtool]);
    let cases: Vec<Case> = [true, false]
        .into_iter()
        .flat_map(|tso| {
            [false, true]
                .into_iter()
                .filter(|&r| !r || !args.no_reverse)
                .map(move |reverse| Case { tso, reverse })
        })
        .collect();
    progress(&format!(
        "{} paths × {} tests of {} s, load {}",
        args.paths.len(),
        cases.len(),
        args.seconds,
        record.load
    ));

    let mut results: Vec<(GuestPath, Vec<Result<Outcome, String>>)> = Vec::new();
    for &path in &args.paths {
        let booted = Instant::now();
        progress(&format!("{path}: booting the guest"));
        let mut run = Run::boot(path, &initrd, args.seconds);
        progress(&format!(
            "{path}: guest up in {:.0} s",
            booted.elapsed().as_secs_f64()
        ));
        let mut outcomes = Vec::new();
        for &case in &cases {
            let outcome = run.case(case);
            match &outcome {
                Ok(o) => progress(&format!(
                    "{path}: {} (guest TSO {}): {:.3} Gbit/s, backend {} CPU-s/GB",
                    case.label(),
                    o.guest_tso,
                    o.received.gbit_per_second(),
                    o.backend
                        .map_or("?".into(), |b| format!("{:.2}", b.cpu_seconds_per_gb()))
                )),
                Err(e) => progress(&format!("{path}: {} failed: {e}", case.label())),
            }
            outcomes.push(outcome);
        }
        drop(run);
        results.push((path, outcomes));
    }
    let load_after = guest_tests::bench::load_average();

    let table = table(&args.paths, &cases, &results);
    let _ = write!(std::io::stdout(), "{table}");
    let _ = writeln!(
        std::io::stdout(),
        "commit {}, {}, {} s per test, load {} before, {load_after} after",
        record.commit,
        record.date,
        args.seconds,
        record.load
    );
    if args.no_record {
        return;
    }
    let line = serde_json::json!({
        "date": record.date,
        "loadavg_at_start": record.load,
        "loadavg_at_end": load_after,
        "commit": record.commit,
        "profile": record.profile,
        "seconds": args.seconds,
        "guest": "QEMU TCG, 1 vCPU on CPU 0, Debian cloud kernel, busybox initramfs; TSO by ethtool -K in the guest",
        "backend_cpu": BACKEND_CPU,
        "results": results.iter().map(|(path, outcomes)| {
            let mut row = serde_json::json!({ "path": path.key() });
            for (case, o) in cases.iter().zip(outcomes) {
                row[case.key()] = match o {
                    Ok(o) => serde_json::json!({
                        "guest_tso": o.guest_tso,
                        "gbit_per_second": o.received.gbit_per_second(),
                        "received_bytes": o.received.bytes,
                        "backend_cpu_seconds_per_gb": o.backend.map(|b| b.cpu_seconds_per_gb()),
                        "backend_cores": o.backend.map(|b| b.cores()),
                        "qemu_cpu_seconds_per_gb": o.qemu.map(|b| b.cpu_seconds_per_gb()),
                    }),
                    Err(e) => serde_json::json!({ "error": e }),
                };
            }
            row
        }).collect::<Vec<_>>(),
    });
    let path = results_dir.join("guest.jsonl");
    append_jsonl(&path, &line);
    let _ = writeln!(std::io::stdout(), "appended to {}", path.display());

    let labels: Vec<String> = cases
        .iter()
        .map(|c| format!("{}, Gbit/s", c.label()))
        .collect();
    let groups: Vec<BarGroup<'_>> = cases
        .iter()
        .enumerate()
        .zip(&labels)
        .map(|((i, _), label)| BarGroup {
            label,
            bars: results
                .iter()
                .map(|(path, outcomes)| {
                    let gbps = outcomes[i]
                        .as_ref()
                        .map_or(0.0, |o| o.received.gbit_per_second());
                    (path.key(), gbps, path.colour())
                })
                .collect(),
        })
        .collect();
    let svg = bar_chart(
        "guest iperf3 through each path (same guest image, one run)",
        &format!(
            "commit {}, {}, load {} → {load_after}",
            record.commit, record.date, record.load
        ),
        &groups,
    );
    let plot = results_dir.join("guest.svg");
    std::fs::write(&plot, svg).unwrap_or_else(|e| panic!("{}: {e}", plot.display()));
    let _ = writeln!(std::io::stdout(), "drew {}", plot.display());
}

/// The results as a Markdown table: per path and test, Gbit/s and backend CPU-s/GB, and for
/// each agent path its ratios to each reference (agent ÷ reference).
fn table(
    paths: &[GuestPath],
    cases: &[Case],
    results: &[(GuestPath, Vec<Result<Outcome, String>>)],
) -> String {
    let mut s = String::from("| path |");
    for c in cases {
        let _ = write!(s, " {} |", c.label());
    }
    s.push_str("\n|---|");
    s.push_str(&"---|".repeat(cases.len()));
    s.push('\n');
    let cell = |o: &Result<Outcome, String>| match o {
        Ok(o) => format!(
            "{:.3} Gbit/s, {} CPU-s/GB (TSO {})",
            o.received.gbit_per_second(),
            o.backend
                .map_or("?".into(), |b| format!("{:.2}", b.cpu_seconds_per_gb())),
            o.guest_tso
        ),
        Err(_) => "failed".into(),
    };
    for (path, outcomes) in results {
        let _ = write!(s, "| {path} |");
        for o in outcomes {
            let _ = write!(s, " {} |", cell(o));
        }
        s.push('\n');
    }
    let of = |p: GuestPath| results.iter().find(|(q, _)| *q == p).map(|(_, o)| o);
    for &agent in paths.iter().filter(|p| p.is_agent()) {
        for &reference in paths.iter().filter(|p| !p.is_agent()) {
            let (Some(a), Some(r)) = (of(agent), of(reference)) else {
                continue;
            };
            let _ = write!(s, "| {agent} ÷ {reference} |");
            for (a, r) in a.iter().zip(r) {
                match (a, r) {
                    (Ok(a), Ok(r)) => {
                        let cpu = match (a.backend, r.backend) {
                            (Some(a), Some(r)) => {
                                format!("{:.2}", a.cpu_seconds_per_gb() / r.cpu_seconds_per_gb())
                            }
                            _ => "?".into(),
                        };
                        let _ = write!(
                            s,
                            " **{:.2}** Gbit/s, {cpu} CPU-s/GB |",
                            a.received.bits_per_second / r.received.bits_per_second
                        );
                    }
                    _ => s.push_str(" – |"),
                }
            }
            s.push('\n');
        }
    }
    s
}
