//! A `knic-agent` serving kernel offload in a network namespace whose loopback is **down**,
//! and programs run there under `knic-offload`: a socket that reached the host's stack
//! instead of the library kernel cannot connect anywhere. The offload socket is
//! `offload.sock` next to the agent's API socket in a scratch directory (the agent's default
//! placement), the agent's stderr is `agent.log` there.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::{NetNs, Proc, Scratch, require_root, run, wait_for};

/// The agent, its namespace and scratch directory; all removed on drop.
#[derive(Debug)]
pub struct OffloadAgent {
    pub ns: NetNs,
    pub dir: Scratch,
    pub socket: PathBuf,
    pub launcher: PathBuf,
    pub agent: Proc,
}

impl OffloadAgent {
    /// Starts `agent` (`args` adds arguments after its `--api-socket`, given the scratch
    /// directory) and waits until `launcher --stats` gets an answer from it.
    pub fn start(
        tag: &str,
        agent: &Path,
        launcher: &Path,
        args: impl FnOnce(&Path, &mut Command),
    ) -> OffloadAgent {
        require_root();
        let ns = NetNs::new(&format!("offload-{tag}"));
        run(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "down"]));
        let dir = Scratch::new(&format!("offload-{tag}"));
        let log = std::fs::File::create(dir.0.join("agent.log"))
            .unwrap_or_else(|e| panic!("cannot create agent.log: {e}"));
        let mut cmd = ns.cmd(agent);
        cmd.arg("--api-socket")
            .arg(dir.0.join("agent.sock"))
            .stderr(log);
        args(&dir.0, &mut cmd);
        let agent = Proc::spawn("knic-agent", &mut cmd);
        let mut env = OffloadAgent {
            socket: dir.0.join("offload.sock"),
            ns,
            dir,
            launcher: launcher.to_path_buf(),
            agent,
        };
        wait_for(
            "the agent's offload socket",
            Duration::from_secs(60),
            || {
                if let Ok(Some(status)) = env.agent.child.try_wait() {
                    panic!(
                        "knic-agent exited ({status}):\n{}",
                        std::fs::read_to_string(env.dir.0.join("agent.log")).unwrap_or_default()
                    );
                }
                env.socket.exists() && env.stats_output().status.success()
            },
        );
        env
    }

    /// `knic-offload --stats` against this agent.
    pub fn stats_output(&self) -> Output {
        Command::new(&self.launcher)
            .arg("--agent")
            .arg(&self.socket)
            .arg("--stats")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.launcher.display()))
    }

    /// The agent's offload counters (JSON), failing the test if it does not answer.
    pub fn stats_json(&self) -> Vec<u8> {
        let out = self.stats_output();
        assert!(
            out.status.success(),
            "knic-offload --stats: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// `program` under the launcher, inside the namespace.
    pub fn offload(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = self.ns.cmd(&self.launcher);
        c.arg("--agent").arg(&self.socket).arg("--").arg(program);
        c
    }

    /// Fails the test if any byte crossed the host's loopback (a socket not offloaded).
    pub fn assert_host_loopback_unused(&self) {
        assert_eq!(
            self.ns.if_stat("lo", "rx_bytes"),
            0,
            "bytes crossed the host's loopback: a socket was not offloaded"
        );
    }
}
