//! The launcher's messages when it cannot run a program offloaded (no agent needed).
#![allow(clippy::unwrap_used)]

use std::process::Command;

const LAUNCHER: &str = env!("CARGO_BIN_EXE_knic-offload");

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(LAUNCHER)
        .args(args)
        .env_remove("KNIC_OFFLOAD_SOCKET")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn no_agent_names_the_socket_and_what_to_do() {
    let dir = std::env::temp_dir().join(format!("knic-offload-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("absent.sock");
    let (code, err) = run(&["--agent", missing.to_str().unwrap(), "--", "true"]);
    assert_eq!(code, 127);
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
    assert!(err.contains("start `knic-agent`"), "{err}");

    // A socket file nobody answers on: a stale one of a dead agent.
    let stale = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let (code, err) = run(&["--agent", stale.to_str().unwrap(), "--", "true"]);
    assert_eq!(code, 127);
    assert!(
        err.contains("no agent answers") && err.contains("restart"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_default_socket_is_used_without_flags() {
    let default = knic_offload_protocol::DEFAULT_SOCKET;
    let (code, err) = run(&["--stats"]);
    if code == 0 {
        // An agent serves the default socket on this machine: found without flags.
        return;
    }
    assert!(
        err.contains(default),
        "without flags the launcher must look at {default}: {err}"
    );
}

#[test]
fn no_program_is_a_usage_error() {
    let (code, err) = run(&[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("PROGRAM") || err.contains("no knic agent"),
        "{err}"
    );
}
