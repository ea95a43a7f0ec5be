//! What the agent's end-to-end tests share: an agent started from a config file in a
//! network namespace, and `knicctl` against its API.
#![allow(clippy::unwrap_used)] // test helpers: a failure fails the test
#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use test_support::{NetNs, Proc, run, wait_for};

pub const AGENT: &str = env!("CARGO_BIN_EXE_knic-agent");
pub const KNICCTL: &str = env!("CARGO_BIN_EXE_knicctl");

/// `knicctl ARGS --output json` against `api`: its JSON, or its stderr.
pub fn ctl(api: &Path, args: &[&str]) -> Result<Value, String> {
    let out = Command::new(KNICCTL)
        .arg("--api-socket")
        .arg(api)
        .args(args)
        .args(["--output", "json"])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A `knic-agent --config FILE` running in a namespace, its API socket and log in `dir`.
pub struct RunningAgent {
    pub agent: Proc,
    pub api: PathBuf,
    pub log: PathBuf,
}

impl RunningAgent {
    /// Starts the agent in `ns` and waits for its API to answer.
    pub fn start(ns: &NetNs, file: &Path, dir: &Path) -> RunningAgent {
        let api = dir.join("agent.sock");
        let log = dir.join("agent.log");
        let mut cmd = ns.cmd(AGENT);
        cmd.arg("--config")
            .arg(file)
            .arg("--api-socket")
            .arg(&api)
            .stderr(std::fs::File::create(&log).unwrap());
        let mut agent = Proc::spawn("knic-agent", &mut cmd);
        wait_for("the agent's API", Duration::from_secs(60), || {
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!(
                    "knic-agent exited ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            api.exists() && ctl(&api, &["tenant", "list"]).is_ok()
        });
        RunningAgent { agent, api, log }
    }

    /// `knicctl ARGS`'s JSON; a failure fails the test with the agent's log.
    pub fn json(&self, args: &[&str]) -> Value {
        ctl(&self.api, args).unwrap_or_else(|e| {
            panic!(
                "knicctl {args:?}: {e}\nagent log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            )
        })
    }

    /// What the agent and the library kernel say (`what`, then the log), for a failure.
    pub fn diagnosis(&self, what: &[&[&str]]) -> String {
        let mut out = String::new();
        for args in what {
            out.push_str(&format!("knicctl {args:?}: {:?}\n", ctl(&self.api, args)));
        }
        out.push_str(&std::fs::read_to_string(&self.log).unwrap_or_default());
        out
    }
}

/// The uplink's wire: a veth from `agent_ns` (`uplink`, up) to `peer_ns` (`peer`, up, with
/// `peer_address`, a CIDR).
pub fn uplink_veth(
    agent_ns: &NetNs,
    uplink: &str,
    peer_ns: &NetNs,
    peer: &str,
    peer_address: &str,
) {
    run(agent_ns
        .cmd("ip")
        .args([
            "link", "add", uplink, "type", "veth", "peer", "name", peer, "netns",
        ])
        .arg(&peer_ns.name));
    run(agent_ns.cmd("ip").args(["link", "set", uplink, "up"]));
    run(peer_ns
        .cmd("ip")
        .args(["addr", "add", peer_address, "dev", peer]));
    run(peer_ns.cmd("ip").args(["link", "set", peer, "up"]));
}
