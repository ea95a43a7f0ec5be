//! `knic-vhost` as an operator runs it: `--print-capabilities` (vhost-user "Backend program
//! conventions") and a clean stop on SIGTERM/SIGINT, with and without a connected frontend.
//! The stop tests create a TAP device: root.

#![allow(clippy::unwrap_used)]

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod common;
use common::knic_vhost::{BIN, Running, stats_path};
use common::wait_until;

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

impl Running {
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
            stats_path(&self.socket),
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
