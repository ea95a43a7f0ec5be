//! `knic-vhost` as an operator runs it: `--print-capabilities` (vhost-user "Backend program
//! conventions") and a clean stop on SIGTERM/SIGINT, with and without a connected frontend.
//! The stop tests create a TAP device: root.

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{require_root, scratch_path, wait_until};

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
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Running {
    fn start(tag: &str) -> Self {
        require_root();
        let socket = scratch_path(&format!("{tag}.sock"));
        let log = scratch_path(&format!("{tag}.log"));
        let tap = format!("kvsig{}{tag}", std::process::id() % 10_000);
        let child = Command::new(BIN)
            .arg("--socket")
            .arg(&socket)
            .args(["--uplink", &format!("tap:{tap}")])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut r = Self { child, socket, log };
        let socket = r.socket.clone();
        wait_until("knic-vhost's socket", || {
            assert!(r.child.try_wait().unwrap().is_none(), "{}", r.log_text());
            socket.exists()
        });
        r
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit and checks it was clean: status 0, sockets gone, said so in the log.
    fn assert_stops_cleanly(mut self, signal: &str) {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("knic-vhost did not stop on {signal}:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let log = self.log_text();
        assert!(status.success(), "exit {status} on {signal}:\n{log}");
        for left in [
            self.socket.clone(),
            with_suffix(&self.socket, ".stats"),
            self.socket
                .with_file_name(format!(".{}.knic-internal", file_name(&self.socket))),
        ] {
            assert!(!left.exists(), "{} left behind:\n{log}", left.display());
        }
        assert!(log.contains("stopping") && log.contains(signal), "{log}");
        assert!(log.contains("stopped"), "{log}");
        let _ = std::fs::remove_file(&self.log);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    let kv = Running::start("idle");
    kv.signal("TERM");
    kv.assert_stops_cleanly("SIGTERM");
}

#[test]
fn sigint_with_a_frontend_connected_disconnects_it_and_stops_cleanly() {
    let kv = Running::start("conn");
    let mut frontend = UnixStream::connect(&kv.socket).unwrap();
    wait_until("the frontend to be accepted", || {
        kv.log_text().contains("frontend connected")
    });
    kv.signal("INT");
    frontend
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        frontend.read(&mut buf).unwrap(),
        0,
        "the frontend's connection must be closed"
    );
    kv.assert_stops_cleanly("SIGINT");
}
