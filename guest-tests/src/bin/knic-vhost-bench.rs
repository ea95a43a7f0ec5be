//! `knic-vhost-bench [SECONDS]`: guest→backend packet rate of knic-vhost against DPDK's own
//! vhost-user backend, with the same sender. Not a test: it prints numbers and appends them
//! (with the date and commit) to `guest-tests/benches/results/vhost.jsonl`.
//!
//! Sender: `dpdk-testpmd` `net_virtio_user` in `txonly` mode, busy-polling on CPU 0.
//! Backends, each alone on CPU 1:
//! * knic-vhost (this build's profile: run with `--release`) in a network namespace the bench
//!   creates, once with a TAP uplink and once with AF_PACKET on a veth pair; the kernel
//!   discards the UDP frames.
//! * `dpdk-testpmd --vdev net_vhost0,iface=SOCK,queues=1 -- --forward-mode=rxonly`.
//!
//! The rate is the sender's `Tx-pps` (testpmd `--stats-period 1`), averaged over the
//! measuring window after a warm-up: packets the backend actually took off the ring, since a
//! full ring makes testpmd count TX-dropped instead. It is cross-checked against the
//! receiver's count over the same window: knic-vhost's `tx_packets`, net_vhost's `Rx-pps`.
//!
//!   cargo build --release -p vhost-backend -p guest-tests --bins
//!   sudo target/release/knic-vhost-bench 5

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use guest_tests::{KnicVhost, NetNs, Proc, Scratch, require_root, require_tool, run, wait_for};

/// CPU of the sender (both of its lcores: the forwarding one busy-polls, main sleeps).
const SENDER_CPU: u32 = 0;
/// CPU of the backend under test.
const BACKEND_CPU: u32 = 1;
/// Frame sizes without FCS (`--txpkts`).
const FRAMES: [u32; 2] = [64, 1500];
const WARMUP: Duration = Duration::from_secs(3);

/// One testpmd process; `vdev` and `fwd` say which side it plays.
fn testpmd(tag: &str, cpu: u32, vdev: &str, fwd: &str, extra: &[String], dir: &Path) -> Proc {
    let log = dir.join(format!("testpmd-{tag}.log"));
    let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("log: {e}"));
    let err = out.try_clone().unwrap_or_else(|e| panic!("log: {e}"));
    let mut cmd = Command::new(require_tool("stdbuf"));
    cmd.arg("-oL")
        .arg(require_tool("dpdk-testpmd"))
        .arg(format!("--lcores=0@{cpu},1@{cpu}"))
        .args(["--no-huge", "-m", "512", "--no-pci"])
        .arg(format!("--file-prefix=kb{}{tag}", std::process::id()))
        .arg("--vdev")
        .arg(vdev)
        .arg("--")
        .arg(format!("--forward-mode={fwd}"))
        .args([
            "--auto-start",
            "--total-num-mbufs=8192",
            "--stats-period",
            "1",
        ])
        .args(extra)
        .stdout(out)
        .stderr(err);
    Proc::spawn("dpdk-testpmd", &mut cmd)
}

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
/// Tx-pps of the measuring window, and calls `mark` at its start and end.
fn measure(
    socket: &Path,
    frame: u32,
    secs: u64,
    dir: &Path,
    tag: &str,
    mut mark: impl FnMut(),
) -> f64 {
    let log = dir.join(format!("testpmd-{tag}.log"));
    let mut tx = testpmd(
        tag,
        SENDER_CPU,
        &format!("net_virtio_user0,path={},queues=1", socket.display()),
        "txonly",
        &[format!("--txpkts={frame}")],
        dir,
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

/// knic-vhost's uplinks: a TAP (one `writev` per frame), or AF_PACKET on one end of a veth
/// pair (one `sendmmsg` per batch).
const UPLINKS: [&str; 2] = ["tap", "packet"];

fn knic_side(uplink: &str, frame: u32, secs: u64) -> (f64, f64) {
    let ns = NetNs::new("bench");
    let dir = Scratch::new(&format!("bench-knic-{uplink}-{frame}"));
    let kv = if uplink == "tap" {
        let kv = KnicVhost::start(&ns, "tap:kvtap0", &dir.0);
        run(ns.cmd("ip").args(["link", "set", "kvtap0", "up"]));
        kv
    } else {
        run(ns
            .cmd("ip")
            .args(["link", "add", "kva", "type", "veth", "peer", "name", "kvb"]));
        for ifname in ["kva", "kvb"] {
            run(ns.cmd("ip").args(["link", "set", ifname, "up"]));
        }
        KnicVhost::start(&ns, "packet:kva", &dir.0)
    };
    // Every thread, and those it starts later (the queue-pair workers), on the backend CPU.
    run(Command::new(require_tool("taskset")).args([
        "-a",
        "-p",
        "-c",
        &BACKEND_CPU.to_string(),
        &kv.proc.child.id().to_string(),
    ]));
    let mut marks = Vec::new();
    let pps = measure(&kv.socket, frame, secs, &dir.0, "knic", || {
        marks.push((
            std::time::Instant::now(),
            kv.stats()["tx_packets"].as_u64().unwrap_or(0),
        ))
    });
    let device_pps = (marks[1].1 - marks[0].1) as f64 / (marks[1].0 - marks[0].0).as_secs_f64();
    (pps, device_pps)
}

/// net_vhost's rate from the sender, and from its own `Rx-pps` over the same window.
fn dpdk_side(frame: u32, secs: u64) -> (f64, f64) {
    let dir = Scratch::new(&format!("bench-dpdk-{frame}"));
    let socket = dir.0.join("vhost.sock");
    let mut rx = testpmd(
        "vhost",
        BACKEND_CPU,
        &format!("net_vhost0,iface={},queues=1", socket.display()),
        "rxonly",
        &[],
        &dir.0,
    );
    wait_for("net_vhost's socket", Duration::from_secs(30), || {
        rx.assert_running();
        socket.exists()
    });
    let rx_log = dir.0.join("testpmd-vhost.log");
    let mut marks = Vec::new();
    let sent = measure(&socket, frame, secs, &dir.0, "dpdk", || {
        marks.push(pps(&rx_log, "Rx-pps:").len())
    });
    let seen: Vec<u64> = pps(&rx_log, "Rx-pps:")
        .into_iter()
        .skip(marks[0])
        .take(marks[1] - marks[0])
        .collect();
    let received = seen.iter().sum::<u64>() as f64 / seen.len().max(1) as f64;
    assert!(
        rx.stop("-INT", Duration::from_secs(30)),
        "net_vhost side did not stop"
    );
    (sent, received)
}

fn sh(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).trim().to_string()
}

fn main() {
    require_root();
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let results_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/results");
    let date = sh(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]));
    let commit = sh(Command::new("git")
        .arg("-C")
        .arg(&results_dir)
        .args(["describe", "--always", "--dirty"]));
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let mut rows = Vec::new();
    for frame in FRAMES {
        let (dpdk, dpdk_rx) = dpdk_side(frame, secs);
        let _ = writeln!(
            std::io::stdout(),
            "{frame:>5} B  net_vhost {:.3} Mpps (its Rx-pps {:.3})",
            dpdk / 1e6,
            dpdk_rx / 1e6
        );
        let mut row = serde_json::json!({
            "frame_bytes": frame,
            "dpdk_net_vhost_mpps": dpdk / 1e6,
            "dpdk_net_vhost_rx_mpps": dpdk_rx / 1e6,
        });
        for uplink in UPLINKS {
            let (knic, knic_device) = knic_side(uplink, frame, secs);
            let ratio = knic / dpdk;
            let _ = writeln!(
                std::io::stdout(),
                "{frame:>5} B  knic-vhost {uplink:<6} {:.3} Mpps (device count {:.3})  ratio to net_vhost {ratio:.3}",
                knic / 1e6,
                knic_device / 1e6,
            );
            row[format!("knic_vhost_{uplink}_mpps")] = (knic / 1e6).into();
            row[format!("knic_vhost_{uplink}_device_mpps")] = (knic_device / 1e6).into();
            row[format!("ratio_{uplink}")] = ratio.into();
        }
        rows.push(row);
    }
    let line = serde_json::json!({
        "date": date,
        "commit": commit,
        "profile": profile,
        "seconds": secs,
        "sender": "dpdk-testpmd net_virtio_user txonly, CPU 0",
        "backend_cpu": BACKEND_CPU,
        "results": rows,
    });
    let path = results_dir.join("vhost.jsonl");
    std::fs::create_dir_all(&results_dir).unwrap_or_else(|e| panic!("{e}"));
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    text.push_str(&format!("{line}\n"));
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let _ = writeln!(std::io::stdout(), "appended to {}", path.display());
}
