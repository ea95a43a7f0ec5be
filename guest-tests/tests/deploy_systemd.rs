//! `deploy/systemd/knic-agent.service` passes `systemd-analyze verify`, and the real
//! knic-agent speaks sd_notify: READY=1 once serving, WATCHDOG=1 at half WATCHDOG_USEC,
//! STOPPING=1 on SIGTERM. systemd is not PID 1 on the CI machine, so the service manager's
//! side is a listening datagram socket named by NOTIFY_SOCKET, as systemd passes it.

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use guest_tests::{Proc, Scratch, require_tool, serial, workspace_bin};

fn unit_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/knic-agent.service")
}

/// The unit with ExecStart pointing at this build's agent (verify checks the binary exists).
fn unit_in(dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let text = fs::read_to_string(unit_source()).unwrap_or_else(|e| panic!("unit: {e}"));
    let text = text.replace(
        "/usr/bin/knic-agent",
        &workspace_bin("knic-agent").display().to_string(),
    );
    let p = dir.join("knic-agent.service");
    fs::write(&p, edit(text)).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    p
}

fn verify(unit: &Path) -> (bool, String) {
    let out = Command::new(require_tool("systemd-analyze"))
        .args(["verify", "--man=no"])
        .arg(unit)
        .output()
        .unwrap_or_else(|e| panic!("systemd-analyze: {e}"));
    (
        out.status.success() && out.stderr.is_empty(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unit_verifies_and_has_the_hardening() {
    let dir = Scratch::new("deploy-unit");
    let (ok, err) = verify(&unit_in(&dir.0, |t| t));
    assert!(ok, "systemd-analyze verify: {err}");
    // The check can fail: a misspelt directive is reported.
    let (ok, err) = verify(&unit_in(&dir.0, |t| {
        t.replace("ProtectHome=", "ProtectHomes=")
    }));
    assert!(
        !ok && err.contains("ProtectHomes"),
        "a broken unit verified: {err}"
    );

    let text = fs::read_to_string(unit_source()).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for want in [
        "Type=notify",
        "WatchdogSec=10s",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_IPC_LOCK",
        "RuntimeDirectory=knic",
        "RuntimeDirectoryMode=0750",
        "Group=knic",
        "UMask=0007",
    ] {
        assert!(lines.contains(&want), "unit lacks {want}");
    }
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("CapabilityBoundingSet=") && l.contains("CAP_SYS_ADMIN")),
        "the base unit grants CAP_SYS_ADMIN"
    );
    // The AF_XDP drop-in adds exactly CAP_BPF and CAP_SYS_ADMIN and verifies with the unit.
    let dropin = fs::read_to_string(unit_source().with_file_name("knic-agent-xdp.conf"))
        .unwrap_or_else(|e| panic!("drop-in: {e}"));
    assert!(dropin.contains("CapabilityBoundingSet=CAP_BPF CAP_SYS_ADMIN\n"));
    let unit = unit_in(&dir.0, |t| t);
    let d = dir.0.join("knic-agent.service.d");
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("xdp.conf"), dropin).unwrap();
    let (ok, err) = verify(&unit);
    assert!(ok, "with the xdp drop-in: {err}");
}

/// Receives one notification within `timeout`.
fn recv(sock: &UnixDatagram, timeout: Duration) -> Option<String> {
    sock.set_read_timeout(Some(timeout))
        .unwrap_or_else(|e| panic!("notify socket: {e}"));
    let mut buf = [0u8; 4096];
    sock.recv(&mut buf)
        .ok()
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The agent with one port in `dir`, its log in `dir/agent.log`, a listening NOTIFY_SOCKET
/// and `env`; returns the agent and the socket systemd would hold.
fn start_notified(dir: &Path, env: &[(&str, &str)]) -> (Proc, UnixDatagram) {
    let notify = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap_or_else(|e| panic!("notify socket: {e}"));
    let log = fs::File::create(dir.join("agent.log")).unwrap_or_else(|e| panic!("log: {e}"));
    let mut cmd = Command::new(workspace_bin("knic-agent"));
    cmd.arg("--api-socket")
        .arg(dir.join("agent.sock"))
        .arg("--port")
        .arg(format!("vm1={}", dir.join("vm1.sock").display()))
        .env("NOTIFY_SOCKET", &notify)
        .envs(env.iter().copied())
        .stderr(log);
    (Proc::spawn("knic-agent", &mut cmd), sock)
}

#[test]
fn agent_notifies_ready_watchdog_and_stopping() {
    let _serial = serial();
    let dir = Scratch::new("deploy-notify");
    let api = dir.0.join("agent.sock");
    let (mut agent, sock) = start_notified(&dir.0, &[("WATCHDOG_USEC", "400000")]);
    let agent_log = || fs::read_to_string(dir.0.join("agent.log")).unwrap_or_default();

    let ready = recv(&sock, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no READY=1 in 60 s; agent log:\n{}", agent_log()));
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        ready.contains(&format!("MAINPID={}", agent.child.id())),
        "{ready:?}"
    );
    // Ready means serving: the API socket is there.
    assert!(api.exists(), "READY=1 before the API socket listens");

    // Keep-alives at about half of 400 ms: at least 4 in 1.5 s, none faster than 100 ms.
    let start = Instant::now();
    let mut pings = Vec::new();
    while start.elapsed() < Duration::from_millis(1500) {
        if let Some(m) = recv(&sock, Duration::from_millis(500)) {
            assert_eq!(m, "WATCHDOG=1");
            pings.push(start.elapsed());
        }
    }
    assert!(
        pings.len() >= 4,
        "{} keep-alives in 1.5 s: {pings:?}",
        pings.len()
    );
    for w in pings.windows(2) {
        assert!(w[1] - w[0] >= Duration::from_millis(100), "{pings:?}");
    }

    assert!(
        agent.stop("-TERM", Duration::from_secs(30)),
        "agent did not stop"
    );
    let mut stopping = false;
    while let Some(m) = recv(&sock, Duration::from_millis(200)) {
        stopping |= m == "STOPPING=1";
    }
    assert!(stopping, "no STOPPING=1; agent log:\n{}", agent_log());
}

#[test]
fn agent_sends_no_keep_alives_for_another_watchdog_pid() {
    let _serial = serial();
    let dir = Scratch::new("deploy-notify2");
    // WATCHDOG_PID names another process: READY=1 still, but no keep-alives.
    let (mut agent, sock) = start_notified(
        &dir.0,
        &[("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", "1")],
    );
    let ready = recv(&sock, Duration::from_secs(60)).expect("READY=1");
    assert!(ready.starts_with("READY=1"), "{ready:?}");
    assert_eq!(
        recv(&sock, Duration::from_millis(800)),
        None,
        "keep-alive for another pid"
    );
    assert!(agent.stop("-TERM", Duration::from_secs(30)));
}
