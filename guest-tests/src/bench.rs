//! What the benchmark binaries (`knic-vhost-bench`, `knic-guest-bench`) share: the testpmd
//! they start, the record of a run (date, commit, load), a process's CPU time from `/proc`,
//! iperf3's JSON report, and the arithmetic from counters sampled during a transfer to host
//! CPU seconds per GB. The arithmetic is pure and unit-tested here; nothing in it is timed.

use std::path::Path;
use std::process::Command;

use crate::{NetNs, Proc, require_tool, run};

/// One `dpdk-testpmd` process on both lcores of `cpu` (the forwarding one busy-polls, main
/// sleeps), without hugepages or PCI, its output in `dir/testpmd-{tag}.log`; `vdevs` and
/// `fwd` say which side it plays, `extra` are application arguments. It runs in `ns` when
/// given (where a `net_tap` creates its TAP). `ip netns exec` and `stdbuf` exec, so the
/// child's pid is testpmd's.
pub fn testpmd(
    tag: &str,
    cpu: u32,
    vdevs: &[&str],
    fwd: &str,
    extra: &[String],
    dir: &Path,
    ns: Option<&NetNs>,
) -> Proc {
    let log = dir.join(format!("testpmd-{tag}.log"));
    let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("log: {e}"));
    let err = out.try_clone().unwrap_or_else(|e| panic!("log: {e}"));
    let stdbuf = require_tool("stdbuf");
    let mut cmd = match ns {
        Some(ns) => ns.cmd(stdbuf),
        None => Command::new(stdbuf),
    };
    cmd.arg("-oL")
        .arg(require_tool("dpdk-testpmd"))
        .arg(format!("--lcores=0@{cpu},1@{cpu}"))
        .args(["--no-huge", "-m", "512", "--no-pci"])
        .arg(format!("--file-prefix=kb{}{tag}", std::process::id()));
    for vdev in vdevs {
        cmd.arg("--vdev").arg(vdev);
    }
    cmd.arg("--")
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

/// Pins every thread of `pid`, and those it starts later, to `cpu` (`taskset -a -p`).
pub fn pin(pid: u32, cpu: u32) {
    run(Command::new(require_tool("taskset")).args([
        "-a",
        "-p",
        "-c",
        &cpu.to_string(),
        &pid.to_string(),
    ]));
}

/// What goes with a run's numbers: when, at which commit, in which profile, and the load
/// average (the machine is shared, so the load is part of the result).
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub date: String,
    pub commit: String,
    pub profile: &'static str,
    pub load: String,
}

impl RunRecord {
    /// Now, at the commit checked out around `dir`.
    pub fn now(dir: &Path) -> Self {
        Self {
            date: sh(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])),
            commit: sh(Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(["describe", "--always", "--dirty"])),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            load: load_average(),
        }
    }
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` gives them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn sh(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).trim().to_string()
}

/// Appends one JSON line to `path` (creating its directory).
pub fn append_jsonl(path: &Path, line: &serde_json::Value) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    }
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    text.push_str(&format!("{line}\n"));
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// User + system CPU time of process `pid` (all its threads), in clock ticks: fields 14 and
/// 15 of `/proc/PID/stat` (proc(5)), read after the command name, which may hold spaces and
/// parentheses. `None` when the process is gone or the line is not what proc(5) says.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    parse_cpu_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // After "pid (comm) " the fields run from state (field 3): utime is field 14.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second of `/proc/PID/stat`'s times (`getconf CLK_TCK`).
pub fn clock_ticks_per_second() -> f64 {
    let out = run(Command::new(require_tool("getconf")).arg("CLK_TCK"));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("getconf CLK_TCK: {e}"))
}

/// Bytes received plus bytes sent by interface `ifname`, from `/proc/PID/net/dev` of a
/// process inside the interface's namespace (read without starting a process in it).
pub fn interface_bytes(pid: u32, ifname: &str) -> Option<u64> {
    parse_interface_bytes(
        &std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?,
        ifname,
    )
}

fn parse_interface_bytes(net_dev: &str, ifname: &str) -> Option<u64> {
    // "  kgb: RXbytes packets errs drop fifo frame compressed multicast TXbytes ...".
    let line = net_dev
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(ifname)?.strip_prefix(':'))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    Some(fields.first()? + fields.get(8)?)
}

/// The receiver's side of an iperf3 TCP test (`iperf3 --json`, `end.sum_received`): what
/// arrived, whichever end sent (with `-R` the client is the receiver; iperf3 exchanges the
/// results, so either end's report holds the receiver's numbers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IperfReceived {
    pub bytes: u64,
    pub seconds: f64,
    pub bits_per_second: f64,
}

impl IperfReceived {
    /// Parses an iperf3 `--json` report; the error says what is missing (iperf3 reports a
    /// failed test as `{"error": ...}`).
    pub fn parse(json: &str) -> Result<Self, String> {
        let doc: serde_json::Value =
            serde_json::from_str(json).map_err(|e| format!("not JSON ({e})"))?;
        if let Some(error) = doc["error"].as_str() {
            return Err(format!("iperf3 failed: {error}"));
        }
        let sum = &doc["end"]["sum_received"];
        let number = |key: &str| {
            sum[key]
                .as_f64()
                .ok_or_else(|| format!("no end.sum_received.{key}"))
        };
        Ok(Self {
            bytes: number("bytes")? as u64,
            seconds: number("seconds")?,
            bits_per_second: number("bits_per_second")?,
        })
    }

    pub fn gbit_per_second(&self) -> f64 {
        self.bits_per_second / 1e9
    }
}

/// One reading taken while a transfer runs: seconds since the first reading, the backend's
/// CPU ticks, and the bytes the peer's interface has seen (received plus sent).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at: f64,
    pub cpu_ticks: u64,
    pub bytes: u64,
}

/// The backend's cost over the part of a run where the transfer moved data: its CPU seconds
/// and the bytes the peer's interface saw in the same interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Busy {
    pub seconds: f64,
    pub cpu_seconds: f64,
    pub bytes: u64,
}

impl Busy {
    /// The interval from the first to the last step between readings in which at least
    /// `min_bytes` crossed: the transfer itself, without the guest's setup before it and
    /// its report after (a polling backend burns its core there too, which would charge
    /// it for time the guest spent elsewhere). `None` if no step moved that much.
    pub fn of(samples: &[Sample], min_bytes: u64, ticks_per_second: f64) -> Option<Busy> {
        let moving = |w: &[Sample]| w[1].bytes.saturating_sub(w[0].bytes) >= min_bytes;
        let steps: Vec<usize> = samples
            .windows(2)
            .enumerate()
            .filter(|(_, w)| moving(w))
            .map(|(i, _)| i)
            .collect();
        let (first, last) = (*steps.first()?, *steps.last()? + 1);
        let (a, b) = (&samples[first], &samples[last]);
        Some(Busy {
            seconds: b.at - a.at,
            cpu_seconds: b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / ticks_per_second,
            bytes: b.bytes.saturating_sub(a.bytes),
        })
    }

    /// Host CPU seconds per GB (10^9 bytes) moved.
    pub fn cpu_seconds_per_gb(&self) -> f64 {
        self.cpu_seconds / (self.bytes as f64 / 1e9)
    }

    /// CPU cores the backend kept busy on average.
    pub fn cores(&self) -> f64 {
        self.cpu_seconds / self.seconds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_utime_plus_stime_even_with_a_strange_command_name() {
        // proc(5): pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt
        // cmajflt utime stime ...
        let stat = "4242 (dpdk (x) 1) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(1234 + 567));
        assert_eq!(parse_cpu_ticks("4242 (short) S 1 2"), None);
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn interface_bytes_add_received_and_sent_of_that_interface_only() {
        let net_dev = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  kgb0:       9       9    0    0    0     0          0         0        9       9    0    0    0     0       0          0
   kgb: 5000000    3400    0    0    0     0          0         0   230000    3300    0    0    0     0       0          0
";
        assert_eq!(parse_interface_bytes(net_dev, "kgb"), Some(5_230_000));
        assert_eq!(parse_interface_bytes(net_dev, "lo"), Some(200));
        assert_eq!(parse_interface_bytes(net_dev, "eth0"), None);
        assert_eq!(parse_interface_bytes("   kgb: 1 2", "kgb"), None);
    }

    #[test]
    fn iperf3_receiver_side_is_read_and_failures_are_reported() {
        let report = r#"{"start":{},"intervals":[],"end":{
            "sum_sent":{"start":0,"end":10.0,"seconds":10.0,"bytes":1300000000,"bits_per_second":1.04e9,"retransmits":3},
            "sum_received":{"start":0,"end":10.02,"seconds":10.02,"bytes":1250000000,"bits_per_second":998003992.0}}}"#;
        let got = IperfReceived::parse(report).unwrap();
        assert_eq!(got.bytes, 1_250_000_000);
        assert_eq!(got.seconds, 10.02);
        assert!((got.gbit_per_second() - 0.998).abs() < 1e-3);
        let failed = r#"{"start":{},"intervals":[],"end":{},"error":"unable to connect to server: Connection refused"}"#;
        assert_eq!(
            IperfReceived::parse(failed),
            Err("iperf3 failed: unable to connect to server: Connection refused".into())
        );
        assert!(IperfReceived::parse(r#"{"end":{}}"#).is_err());
        assert!(IperfReceived::parse("iperf3: error").is_err());
    }

    fn sample(at: f64, cpu_ticks: u64, bytes: u64) -> Sample {
        Sample {
            at,
            cpu_ticks,
            bytes,
        }
    }

    #[test]
    fn busy_interval_leaves_out_the_setup_and_the_report() {
        // Idle, then 3 steps of 100 MB with the backend at 50 then 100 ticks per step,
        // a trickle (the control connection), then idle with the CPU still burning.
        let samples = [
            sample(0.0, 0, 0),
            sample(0.5, 50, 1_000),
            sample(1.0, 100, 100_001_000),
            sample(1.5, 200, 200_001_000),
            sample(2.0, 300, 300_001_000),
            sample(2.5, 350, 300_002_000),
            sample(3.0, 400, 300_002_000),
        ];
        let busy = Busy::of(&samples, 1_000_000, 100.0).unwrap();
        assert_eq!(busy.seconds, 1.5);
        assert_eq!(busy.bytes, 300_000_000);
        assert_eq!(busy.cpu_seconds, 2.5);
        // 2.5 CPU seconds for 0.3 GB.
        assert!((busy.cpu_seconds_per_gb() - 2.5 / 0.3).abs() < 1e-9);
        assert!((busy.cores() - 2.5 / 1.5).abs() < 1e-9);
        // A pause in the middle stays inside the interval.
        let gap = [
            sample(0.0, 0, 0),
            sample(1.0, 100, 50_000_000),
            sample(2.0, 200, 50_000_000),
            sample(3.0, 300, 100_000_000),
        ];
        let busy = Busy::of(&gap, 1_000_000, 100.0).unwrap();
        assert_eq!(
            (busy.seconds, busy.bytes, busy.cpu_seconds),
            (3.0, 100_000_000, 3.0)
        );
        // Nothing moved: no interval, rather than a division by zero.
        assert_eq!(Busy::of(&samples[..2], 1_000_000, 100.0), None);
        assert_eq!(Busy::of(&[], 1, 100.0), None);
    }
}
