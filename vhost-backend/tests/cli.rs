//! `knic-vhost` as an operator runs it: `--print-capabilities` (vhost-user "Backend program
//! conventions") and a clean stop on SIGTERM/SIGINT, with and without a connected frontend.
//! The stop tests create a TAP device: root.

#![allow(clippy::unwrap_used)]

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use test_support::{Proc, require_root};

mod common;
use common::{scratch_path, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_knic-vhost");

#[test]
fn print_capabilities_is_the_vhost_user_json_and_ignores_other_arguments() {
    for args in [
        &["--print-capabilities"][..],
        &[
            "--socket",
            "/nonexistent/dir/x.sock",
            "--print-capabilities",
            "--bogus",
        ][..],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc, serde_json::json!({ "type": "net" }), "{args:?}");
    }
}

/// A knic-vhost serving on a scratch socket with a TAP uplink of its own.
struct Running {
    proc: Proc,
    socket: PathBuf,
    log: PathBuf,
}

impl Running {
    fn start(tag: &str) -> Self {
        require_root();
        let socket = scratch_path(&format!("{tag}.sock"));
        let log = scratch_path(&format!("{tag}.log"));
        let tap = format!("kvsig{}{tag}", std::process::id() % 10_000);
        let mut cmd = Command::new(BIN);
        cmd.arg("--socket")
            .arg(&socket)
            .args(["--uplink", &format!("tap:{tap}")])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut proc = Proc::spawn("knic-vhost", &mut cmd);
        wait_until("knic-vhost's socket", || {
            proc.assert_running();
            socket.exists()
        });
        Self { proc, socket, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` (`TERM`, `INT`) and checks the exit was clean: status 0, every socket
    /// gone, said so in the log. Returns the log.
    fn assert_stops_cleanly_on(mut self, signal: &str) -> String {
        let exited = self
            .proc
            .stop(&format!("-{signal}"), Duration::from_secs(10));
        let log = self.log_text();
        assert!(exited, "knic-vhost did not stop on SIG{signal}:\n{log}");
        let status = self.proc.child.try_wait().unwrap().unwrap();
        assert!(status.success(), "exit {status} on SIG{signal}:\n{log}");
        for left in [
            self.socket.clone(),
            with_suffix(&self.socket, ".stats"),
            self.socket
                .with_file_name(format!(".{}.knic-internal", file_name(&self.socket))),
        ] {
            assert!(!left.exists(), "{} left behind:\n{log}", left.display());
        }
        assert!(
            log.contains("stopping") && log.contains(&format!("SIG{signal}")),
            "{log}"
        );
        assert!(log.contains("stopped cleanly"), "{log}");
        let _ = std::fs::remove_file(&self.log);
        log
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[test]
fn sigterm_while_waiting_for_a_frontend_stops_cleanly() {
    Running::start("idle").assert_stops_cleanly_on("TERM");
}

/// The daemon waits on the connection; the signal must end it as if the frontend had left.
#[test]
fn sigint_with_a_frontend_connected_disconnects_it_and_stops_cleanly() {
    let kv = Running::start("conn");
    let _frontend = UnixStream::connect(&kv.socket).unwrap();
    wait_until("the frontend to be accepted", || {
        kv.log_text().contains("frontend connected")
    });
    let log = kv.assert_stops_cleanly_on("INT");
    assert!(log.contains("frontend disconnected"), "{log}");
}
