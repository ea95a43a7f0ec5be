//! The real `knic-vhost` binary, run as an operator would: a scratch socket, a TAP uplink of
//! its own (root), its log in a scratch file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use test_support::{Proc, require_root};

use super::{scratch_path, wait_until};

pub const BIN: &str = env!("CARGO_BIN_EXE_knic-vhost");

pub struct Running {
    pub proc: Proc,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Running {
    /// Starts it and waits for its vhost-user and stats sockets. `tag` (at most 8
    /// characters) names its TAP device and files, so it must be unique among the tests.
    pub fn start(tag: &str) -> Self {
        require_root();
        let socket = scratch_path(&format!("{tag}.sock"));
        let log = scratch_path(&format!("{tag}.log"));
        assert!(tag.len() <= 8, "tag {tag} too long for a TAP name");
        let tap = format!("kv{}{tag}", std::process::id() % 100_000);
        let mut cmd = Command::new(BIN);
        cmd.arg("--socket")
            .arg(&socket)
            .args(["--uplink", &format!("tap:{tap}")])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut proc = Proc::spawn("knic-vhost", &mut cmd);
        let stats = stats_path(&socket);
        wait_until("knic-vhost's sockets", || {
            proc.assert_running();
            socket.exists() && stats.exists()
        });
        Self { proc, socket, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The default stats socket of a vhost-user socket (`SOCKET.stats`).
pub fn stats_path(socket: &Path) -> PathBuf {
    let mut p = socket.as_os_str().to_owned();
    p.push(".stats");
    PathBuf::from(p)
}
