//! Harness for knic's end-to-end tests with real peers.
//!
//! Every test needs root (network namespaces, TAP devices) and external tools; a missing one
//! fails the test with a message naming `deploy/dev/setup-debian.sh`, never a silent pass.
//! Traffic stays inside network namespaces the tests create. Children are reaped on drop
//! (SIGTERM, then SIGKILL), namespaces deleted, and every wait has a deadline.

use std::fs;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub mod agent;
pub mod bench;
pub mod hostile;
pub mod initramfs;
pub mod qemu;

pub use test_support::{
    Footprint, NetNs, Proc, SETUP, Scratch, footprint, frontend, pseudo_random, require_root,
    require_tool, run, wait_for,
};

/// Tests share two cores and DPDK's file prefix space: one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The SHA-256 of a file, hex (`sha256sum`): the end-to-end tests' payload check.
pub fn sha256(path: &Path) -> String {
    let out = run(Command::new(require_tool("sha256sum")).arg(path));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A binary built by this workspace next to the test executable (`target/<profile>/NAME`).
pub fn workspace_bin(name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(format!("KNIC_{}", name.to_uppercase().replace('-', "_"))) {
        return PathBuf::from(p);
    }
    // Test executables live in `target/<profile>/deps`, binaries (the bench) beside `name`.
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let profile_dir = if dir.ends_with("deps") {
        dir.parent().map(Path::to_path_buf).unwrap_or_default()
    } else {
        dir
    };
    let p = profile_dir.join(name);
    assert!(
        p.is_file(),
        "{} not built: run `cargo build --workspace --bins` (or `cargo test --workspace`)",
        p.display()
    );
    p
}

/// knic-vhost running in a namespace, serving `socket`.
#[derive(Debug)]
pub struct KnicVhost {
    pub proc: Proc,
    pub socket: PathBuf,
    pub stats_socket: PathBuf,
}

impl KnicVhost {
    /// Starts knic-vhost in `ns` with `uplink` (`tap:NAME` or `packet:IFNAME`), one queue pair.
    pub fn start(ns: &NetNs, uplink: &str, dir: &Path) -> Self {
        Self::start_with_queues(ns, uplink, dir, 1)
    }

    /// Starts knic-vhost offering `queues` queue pairs.
    pub fn start_with_queues(ns: &NetNs, uplink: &str, dir: &Path, queues: u16) -> Self {
        Self::start_with_args(ns, uplink, dir, queues, &[])
    }

    /// Starts knic-vhost offering `queues` queue pairs, with `extra` arguments
    /// (`--busy-poll-us 50`).
    pub fn start_with_args(
        ns: &NetNs,
        uplink: &str,
        dir: &Path,
        queues: u16,
        extra: &[&str],
    ) -> Self {
        let socket = dir.join("vhost.sock");
        let stats_socket = dir.join("vhost.stats");
        // A killed predecessor leaves its socket behind; waiting for the path to appear must
        // mean this instance listens.
        let _ = fs::remove_file(&socket);
        let log =
            fs::File::create(dir.join("knic-vhost.log")).unwrap_or_else(|e| panic!("log: {e}"));
        let mut cmd = ns.cmd(workspace_bin("knic-vhost"));
        cmd.arg("--socket")
            .arg(&socket)
            .arg("--stats-socket")
            .arg(&stats_socket)
            .args(["--uplink", uplink, "--queues", &queues.to_string()])
            .args(extra)
            .env("RUST_LOG", "info")
            .stderr(log);
        let mut proc = Proc::spawn("knic-vhost", &mut cmd);
        wait_for("knic-vhost's socket", Duration::from_secs(10), || {
            proc.assert_running();
            socket.exists()
        });
        Self {
            proc,
            socket,
            stats_socket,
        }
    }

    /// Kills the daemon with SIGKILL (no cleanup of its own, as in a crash) and reaps it.
    pub fn kill(&mut self) {
        self.proc.assert_running();
        self.proc
            .child
            .kill()
            .unwrap_or_else(|e| panic!("SIGKILL knic-vhost: {e}"));
        let _ = self.proc.child.wait();
    }

    /// Counters summed over every queue pair.
    pub fn stats(&self) -> serde_json::Value {
        let mut s =
            UnixStream::connect(&self.stats_socket).unwrap_or_else(|e| panic!("stats socket: {e}"));
        let mut body = String::new();
        s.read_to_string(&mut body)
            .unwrap_or_else(|e| panic!("stats read: {e}"));
        let doc: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("stats JSON {body:?}: {e}"));
        let pairs = doc["queue_pairs"].as_array().cloned().unwrap_or_default();
        let mut total = pairs.first().cloned().unwrap_or_default();
        for pair in pairs.iter().skip(1) {
            add_counters(&mut total, pair);
        }
        if let Some(t) = total.as_object_mut() {
            t.remove("queue_pair");
        }
        total
    }

    /// Sum of every drop counter.
    pub fn total_drops(stats: &serde_json::Value) -> u64 {
        stats["drops"]
            .as_object()
            .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
            .unwrap_or(u64::MAX)
    }
}

/// Adds every counter of `from` (numbers, and the numbers of nested maps such as `drops`)
/// into `into`.
fn add_counters(into: &mut serde_json::Value, from: &serde_json::Value) {
    let (Some(into), Some(from)) = (into.as_object_mut(), from.as_object()) else {
        return;
    };
    for (key, value) in from {
        match (into.get_mut(key), value.as_u64()) {
            (Some(serde_json::Value::Number(n)), Some(v)) => {
                *n = (n.as_u64().unwrap_or(0) + v).into();
            }
            (Some(nested), None) => add_counters(nested, value),
            _ => {}
        }
    }
}

/// DPDK testpmd attached to a vhost-user socket through `net_virtio_user`.
#[derive(Debug)]
pub struct Testpmd {
    pub proc: Proc,
    pub log: PathBuf,
}

/// Final counters testpmd prints for all ports when it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

impl Testpmd {
    pub fn start(socket: &Path, mode: &str, dir: &Path) -> Self {
        let bin = require_tool("dpdk-testpmd");
        let log = dir.join(format!("testpmd-{mode}.log"));
        let out = fs::File::create(&log).unwrap_or_else(|e| panic!("log: {e}"));
        let err = out.try_clone().unwrap_or_else(|e| panic!("log: {e}"));
        let prefix = format!("knic{}{mode}", std::process::id());
        // Line-buffered, so progress lines reach the log while it runs.
        let mut cmd = Command::new(require_tool("stdbuf"));
        cmd.arg("-oL")
            .arg(bin)
            .args(["-l", "0-1", "--no-huge", "-m", "512", "--no-pci"])
            .arg(format!("--file-prefix={prefix}"))
            .arg("--vdev")
            .arg(format!(
                "net_virtio_user0,path={},queues=1",
                socket.display()
            ))
            .arg("--")
            .arg(format!("--forward-mode={mode}"))
            .args([
                "--auto-start",
                "--total-num-mbufs=8192",
                "--stats-period",
                "1",
            ])
            .stdout(out)
            .stderr(err);
        let proc = Proc::spawn("dpdk-testpmd", &mut cmd);
        Self { proc, log }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until testpmd reports forwarding started.
    pub fn wait_started(&mut self) {
        wait_for(
            "testpmd to start forwarding",
            Duration::from_secs(30),
            || {
                if let Ok(Some(status)) = self.proc.child.try_wait() {
                    panic!("dpdk-testpmd exited early ({status}):\n{}", self.log_text());
                }
                self.log_text().contains("start packet forwarding")
            },
        );
    }

    /// Stops testpmd (SIGINT, as at its prompt) and returns its accumulated counters.
    pub fn stop(mut self) -> ForwardStats {
        assert!(
            self.proc.stop("-INT", Duration::from_secs(30)),
            "dpdk-testpmd did not stop on SIGINT:\n{}",
            self.log_text()
        );
        let text = self.log_text();
        parse_accumulated(&text)
            .unwrap_or_else(|| panic!("no accumulated statistics in testpmd output:\n{text}"))
    }
}

fn field(block: &str, name: &str) -> Option<u64> {
    let at = block.find(name)? + name.len();
    block[at..].split_whitespace().next()?.parse().ok()
}

/// Parses the "Accumulated forward statistics for all ports" block.
pub fn parse_accumulated(text: &str) -> Option<ForwardStats> {
    let at = text.rfind("Accumulated forward statistics for all ports")?;
    let block = &text[at..];
    Some(ForwardStats {
        rx_packets: field(block, "RX-packets:")?,
        tx_packets: field(block, "TX-packets:")?,
        tx_dropped: field(block, "TX-dropped:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_testpmd_final_block() {
        let text = "  RX-packets: 1  RX-missed: 0\n+++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++\n  RX-packets: 1048576        RX-dropped: 0             RX-total: 1048576\n  TX-packets: 12             TX-dropped: 3             TX-total: 15\n";
        assert_eq!(
            parse_accumulated(text),
            Some(ForwardStats {
                rx_packets: 1_048_576,
                tx_packets: 12,
                tx_dropped: 3
            })
        );
        assert_eq!(parse_accumulated("nothing"), None);
    }
}
