//! What knic's tests that touch the real system share: the root and tool checks, running
//! commands, bounded waits, network namespaces, child processes, scratch directories, a
//! process's footprint, a raw vhost-user frontend (`frontend`), a packet sink with a room
//! budget for backpressure tests (`budget`) and an agent serving kernel offload (`offload`).
//!
//! A missing prerequisite fails the test with a message naming `deploy/dev/setup-debian.sh`,
//! never a silent pass. Children are reaped on drop (SIGTERM, then SIGKILL), namespaces
//! deleted, and every wait has a deadline.

pub mod budget;
pub mod chart;
pub mod frontend;
pub mod offload;
mod sys;

pub use sys::{in_netns, poll_readable, tcp_connect_from};

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The script that prepares a development machine.
pub const SETUP: &str = "deploy/dev/setup-debian.sh";

/// Fails unless running as root with `ip` (iproute2) installed. Reads the real uid from
/// /proc, so the check needs no unsafe call.
pub fn require_root() {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    assert_eq!(
        uid, "0",
        "this test creates network namespaces, TAP devices or packet sockets: run it as \
         root (a development machine is prepared by {SETUP})"
    );
    assert!(
        Command::new("ip").arg("-V").output().is_ok(),
        "`ip` (iproute2) is missing: run {SETUP} as root to install it"
    );
}

/// Path of `tool` on PATH, or a failure saying how to install it.
pub fn require_tool(tool: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{tool}` is missing: run {SETUP} as root to install it"))
}

/// Runs a command to completion, failing the test with its stderr if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(tag: &str) -> Self {
        let name = format!("knic-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(Command::new("ip").args(["netns", "add", &name]));
        run(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]));
        Self { name }
    }

    /// A command that runs inside the namespace.
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Reads a counter of `ifname` inside the namespace.
    pub fn if_stat(&self, ifname: &str, stat: &str) -> u64 {
        let out = run(self
            .cmd("cat")
            .arg(format!("/sys/class/net/{ifname}/statistics/{stat}")));
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A child process stopped (SIGTERM, then SIGKILL after 5 s) and reaped on drop.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    pub what: &'static str,
}

impl Proc {
    pub fn spawn(what: &'static str, cmd: &mut Command) -> Self {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Self { child, what }
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .output();
    }

    /// Sends `sig` and waits up to `timeout` for the exit; false if it did not exit.
    pub fn stop(&mut self, sig: &str, timeout: Duration) -> bool {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return true;
        }
        self.signal(sig);
        let start = Instant::now();
        while start.elapsed() < timeout {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Fails the test if the process has already exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited early: {status}", self.what);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.stop("-TERM", Duration::from_secs(5)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A scratch directory removed on drop.
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("knic-e2e-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("cannot create {}: {e}", p.display()));
        Self(p)
    }
}

impl Drop for Scratch {
    /// Kept for inspection when `KNIC_E2E_KEEP` is set.
    fn drop(&mut self) {
        if std::env::var_os("KNIC_E2E_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// What a process holds, from /proc: the leak tests compare it before and after cycles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    pub fds: usize,
    pub threads: u64,
    /// Of `threads`, the library kernel's (host threads named `linux-kthread`, one per
    /// kernel thread: kworkers the kernel's workqueue pools start and retire as they see
    /// fit). Zero in a process without the library.
    pub kernel_threads: u64,
    pub rss_kib: u64,
}

/// Kernel threads a leak test lets a process end with beyond its start: the kernel starts
/// a kworker when every worker of a pool blocks and keeps it for minutes
/// (`IDLE_WORKER_TIMEOUT`). A thread lost per cycle would be a hundred.
pub const KERNEL_THREAD_SLACK: u64 = 2;

impl Footprint {
    /// Threads besides the library kernel's: a leak test wants these back exactly.
    pub fn host_threads(&self) -> u64 {
        self.threads.saturating_sub(self.kernel_threads)
    }

    /// Asserts that `self` (after the cycles) is back to `start`: the same fds and host
    /// threads, at most [`KERNEL_THREAD_SLACK`] more kernel threads, RSS within
    /// `rss_slack_kib`. `what` names the process in the messages.
    pub fn assert_back_to(&self, start: &Footprint, rss_slack_kib: u64, what: &str) {
        assert_eq!(self.fds, start.fds, "{what}'s open fds");
        assert_eq!(
            self.host_threads(),
            start.host_threads(),
            "{what}'s threads besides the library kernel's (start {start:?}, end {self:?})"
        );
        assert!(
            self.kernel_threads <= start.kernel_threads + KERNEL_THREAD_SLACK,
            "{what}'s library kernel has {} more threads (start {start:?}, end {self:?})",
            self.kernel_threads.saturating_sub(start.kernel_threads)
        );
        assert!(
            self.rss_kib <= start.rss_kib + rss_slack_kib,
            "{what}'s RSS grew from {} KiB to {} KiB",
            start.rss_kib,
            self.rss_kib
        );
    }
}

/// Open fds, threads and resident memory of process `pid`.
pub fn footprint(pid: u32) -> Footprint {
    let fds = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .count();
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    let kernel_threads = fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(Result::ok)
                .filter(|t| {
                    fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.trim_end() == "linux-kthread")
                })
                .count() as u64
        })
        .unwrap_or(0);
    Footprint {
        fds,
        threads: field("Threads:"),
        kernel_threads,
        rss_kib: field("VmRSS:"),
    }
}

/// `len` bytes of a fixed pseudo-random pattern (xorshift64 from `seed`, eight bytes per
/// step): test payloads with no run of equal pages, the same on every run.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.max(1);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}
