//! knic-cni run as a runtime runs it (environment + stdin), on the paths that need no agent
//! (one enters a namespace, so it needs root): VERSION, `--help`/`--version` by hand, and every error code it can give
//! before reaching the agent, each with the spec's JSON (`cniVersion`, `code`, `msg`,
//! `details`) on stdout and a non-zero exit.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_knic-cni");

/// Runs the plugin with `env` and `stdin`; (exit success, stdout JSON or Null, stdout text).
fn cni(env: &[(&str, &str)], stdin: &str) -> (bool, Value, String) {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let v = serde_json::from_str(&text).unwrap_or(Value::Null);
    (out.status.success(), v, text)
}

/// Asserts an error with `code`, a message containing `msg`, and non-empty details.
fn assert_error(env: &[(&str, &str)], stdin: &str, code: u64, msg: &str) {
    let (ok, v, text) = cni(env, stdin);
    assert!(!ok, "expected error {code}, got success: {text}");
    assert_eq!(v["code"], code, "{text}");
    assert!(
        v["msg"].as_str().unwrap().contains(msg),
        "msg should contain {msg:?}: {text}"
    );
    assert!(
        !v["details"].as_str().unwrap().is_empty(),
        "details say what to fix: {text}"
    );
    assert!(v["cniVersion"].is_string(), "{text}");
}

fn conf(extra: &str) -> String {
    format!(
        r#"{{"cniVersion":"1.1.0","name":"knic-test","type":"knic-cni",
            "agentSocket":"/nonexistent/knic-cni-test.sock","socketDir":"/tmp/knic-cni-errors-test"{extra}}}"#
    )
}

const ADD: &[(&str, &str)] = &[
    ("CNI_COMMAND", "ADD"),
    ("CNI_CONTAINERID", "c1"),
    ("CNI_IFNAME", "eth0"),
    ("CNI_NETNS", "/nonexistent/netns/c1"),
    ("CNI_PATH", "/usr/lib/cni"),
];

#[test]
fn version_by_the_runtime_and_by_hand() {
    let (ok, v, _) = cni(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.1.0"}"#);
    assert!(ok);
    assert_eq!(v["cniVersion"], "1.1.0");
    assert_eq!(
        v["supportedVersions"],
        serde_json::json!(["1.0.0", "1.1.0"])
    );

    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("knic-cni 0.1.0"));
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && help.contains("CNI_COMMAND") && help.contains("vhost-user"));
    // Run by hand without CNI_COMMAND or an option: told what it is, exit 1.
    let out = Command::new(BIN)
        .env_remove("CNI_COMMAND")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("container runtime"));
}

#[test]
fn every_error_before_the_agent_has_its_code() {
    // 4: the environment.
    assert_error(
        &[("CNI_COMMAND", "FROB")],
        &conf(""),
        4,
        "not a CNI command",
    );
    assert_error(
        &[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")],
        &conf(r#","kind":"vhost-user""#),
        4,
        "CNI_CONTAINERID",
    );
    assert_error(
        &[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1")],
        &conf(r#","kind":"vhost-user""#),
        4,
        "CNI_IFNAME",
    );
    assert_error(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0/x"),
        ],
        &conf(r#","kind":"vhost-user""#),
        4,
        "not an interface name",
    );
    assert_error(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ],
        &conf(""),
        4,
        "CNI_NETNS",
    );
    let mut bad_args = ADD.to_vec();
    bad_args[2] = ("CNI_IFNAME", "kcnone0");
    bad_args[3] = ("CNI_NETNS", "/proc/self/ns/net");
    bad_args.push(("CNI_ARGS", "IgnoreUnknown=1;junk"));
    assert_error(&bad_args, &conf(""), 4, "CNI_ARGS");
    // 6: stdin is not JSON.
    assert_error(ADD, "{not json", 6, "not JSON");
    // 1: a version we do not speak.
    assert_error(
        ADD,
        r#"{"cniVersion":"0.2.0","name":"n","type":"knic-cni"}"#,
        1,
        "0.2.0",
    );
    // 7: the configuration.
    assert_error(
        ADD,
        r#"{"cniVersion":"1.1.0","type":"knic-cni"}"#,
        7,
        "understands",
    );
    assert_error(
        ADD,
        r#"{"cniVersion":"1.1.0","name":"-bad","type":"knic-cni"}"#,
        7,
        "network name",
    );
    assert_error(ADD, &conf(r#","kind":"wifi""#), 7, "understands");
    assert_error(ADD, &conf(r#","mtu":20"#), 7, "mtu 20");
    // netdev needs both interfaces, by valid names (7); they mean nothing to other kinds (2).
    assert_error(ADD, &conf(r#","kind":"netdev""#), 7, "needs device");
    assert_error(
        ADD,
        &conf(r#","kind":"netdev","device":"vf0""#),
        7,
        "needs representor",
    );
    assert_error(
        ADD,
        &conf(r#","kind":"netdev","device":"a/b","representor":"rep0""#),
        7,
        "not an interface name",
    );
    assert_error(
        ADD,
        &conf(r#","kind":"netdev","device":"vf0","representor":"sixteen-chars-xx""#),
        7,
        "not an interface name",
    );
    // 2: an unsupported field.
    assert_error(ADD, &conf(r#","device":"vf0""#), 2, "netdev");
    assert_error(
        ADD,
        &conf(r#","kind":"netdev","device":"vf0","representor":"rep0","tenant":"blue""#),
        2,
        "tenant",
    );
    // 3: the container's netns is gone.
    assert_error(ADD, &conf(""), 3, "CNI_NETNS");
    // 7: IPAM that cannot be found or is not named.
    let mut vhost = ADD.to_vec();
    vhost[4] = ("CNI_PATH", "/nonexistent/cni-bin");
    assert_error(
        &vhost,
        &conf(r#","kind":"vhost-user","ipam":{"type":"host-local"}"#),
        7,
        "not found on CNI_PATH",
    );
    assert_error(
        &vhost,
        &conf(r#","kind":"vhost-user","ipam":{"subnet":"10.0.0.0/24"}"#),
        7,
        "no \"type\"",
    );
    assert_error(
        &vhost,
        &conf(r#","kind":"vhost-user","ipam":{"type":"../x"}"#),
        7,
        "not a plugin name",
    );
    // 11: the agent is not there (ADD); the runtime may try again.
    assert_error(ADD, &conf(r#","kind":"vhost-user""#), 11, "not reachable");
    // 50: STATUS with no agent.
    assert_error(
        &[("CNI_COMMAND", "STATUS")],
        &conf(""),
        50,
        "does not answer",
    );
    // CHECK without prevResult: 7.
    let mut check = ADD.to_vec();
    check[0] = ("CNI_COMMAND", "CHECK");
    assert_error(&check, &conf(r#","kind":"vhost-user""#), 7, "prevResult");
}
