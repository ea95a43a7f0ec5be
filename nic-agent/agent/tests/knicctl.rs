//! knic-agent and knicctl as a user runs them: the agent binary with flags, each knicctl
//! subcommand against it, bad values refused with messages that name them, and a clean stop
//! on SIGTERM. No guest here (guest-tests/tests/agent*.rs attach real ones).
#![allow(clippy::unwrap_used)] // test helpers: a failure fails the test

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use test_support::{Proc, Scratch, require_root, wait_for};

const AGENT: &str = env!("CARGO_BIN_EXE_knic-agent");
const KNICCTL: &str = env!("CARGO_BIN_EXE_knicctl");

struct Agent {
    proc: Proc,
    api: PathBuf,
    dir: Scratch,
}

impl Agent {
    /// Starts the agent with `args` (plus its API socket in a scratch directory) and waits
    /// until its API answers.
    fn start(tag: &str, args: &[String]) -> Agent {
        let dir = Scratch::new(&format!("agent-{tag}"));
        let api = dir.0.join("agent.sock");
        let log = std::fs::File::create(dir.0.join("agent.log")).unwrap();
        let mut cmd = Command::new(AGENT);
        cmd.arg("--api-socket").arg(&api).args(args).stderr(log);
        let mut proc = Proc::spawn("knic-agent", &mut cmd);
        let log_path = dir.0.join("agent.log");
        wait_for("the agent's API", Duration::from_secs(30), || {
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!(
                    "knic-agent exited ({status}):\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            api.exists() && ctl(&api, &["port", "list"]).status.success()
        });
        Agent { proc, api, dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.0.join(name).display().to_string()
    }

    /// Runs knicctl; asserts success and returns its JSON answer.
    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        let out = ctl(&self.api, &a);
        assert!(
            out.status.success(),
            "knicctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Runs knicctl; asserts failure and returns its message.
    fn refused(&self, args: &[&str]) -> String {
        let out = ctl(&self.api, args);
        assert!(!out.status.success(), "knicctl {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

fn ctl(api: &Path, args: &[&str]) -> Output {
    Command::new(KNICCTL)
        .arg("--api-socket")
        .arg(api)
        .args(args)
        .output()
        .unwrap()
}

fn port_arg(dir_agent: &Scratch, name: &str, extra: &str) -> String {
    format!(
        "--port={name}={}{extra}",
        dir_agent.0.join(format!("{name}.sock")).display()
    )
}

/// A scratch directory for the port sockets named on the agent's command line.
fn sockets(tag: &str) -> Scratch {
    Scratch::new(&format!("agent-sockets-{tag}"))
}

#[test]
fn port_add_list_and_remove() {
    let socks = sockets("ports");
    let agent = Agent::start("ports", &[port_arg(&socks, "vm1", "")]);
    let vm2 = agent.path("vm2.sock");
    let added = agent.json(&["port", "add", &format!("vm2={vm2},queues=2,offloads=off")]);
    assert_eq!(added["name"], "vm2");
    assert_eq!(added["queue_pairs"], 2);
    let ports = agent.json(&["port", "list"]);
    let ports = ports.as_array().unwrap();
    assert_eq!(ports.len(), 2, "{ports:?}");
    for p in ports {
        assert_eq!(p["guest_connected"], false, "no frontend yet: {p}");
        assert_eq!(
            p["library_carrier"], false,
            "no carrier without a guest: {p}"
        );
        assert_eq!(p["serving"], true, "{p}");
        assert!(Path::new(p["socket"].as_str().unwrap()).exists(), "{p}");
        assert!(
            p["library_features"]
                .as_array()
                .unwrap()
                .contains(&Value::from("mrg_rxbuf")),
            "the library's driver negotiated: {p}"
        );
    }
    let tso = |p: &Value| {
        p["library_features"]
            .as_array()
            .unwrap()
            .contains(&Value::from("host_tso4"))
    };
    assert!(tso(&ports[0]), "vm1 has offloads: {}", ports[0]);
    assert!(
        !tso(&ports[1]),
        "vm2 was added with offloads=off: {}",
        ports[1]
    );
    let text = ctl(&agent.api, &["port", "list"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("name=vm2") && text.contains("queue_pairs=2"),
        "{text}"
    );

    let msg = agent.refused(&["port", "add", &format!("vm1={}", agent.path("x.sock"))]);
    assert!(msg.contains("already the name"), "{msg}");
    let msg = agent.refused(&["port", "add", &format!("vm3={vm2}")]);
    assert!(msg.contains("already served by port vm2"), "{msg}");
    let msg = agent.refused(&["port", "remove", "vm9"]);
    assert!(msg.contains("no port or uplink is named \"vm9\""), "{msg}");
    assert!(msg.contains("vm1, vm2"), "lists the known names: {msg}");

    // Removal: the library's interface goes with the port, the socket is removed, and the
    // same port can come back.
    let eth = added["ifname"].as_str().unwrap().to_owned();
    let removed = agent.json(&["port", "remove", "vm2"]);
    assert_eq!(removed["removed"], "vm2");
    let ports = agent.json(&["port", "list"]);
    assert_eq!(ports.as_array().unwrap().len(), 1, "{ports}");
    assert!(!Path::new(&vm2).exists(), "vm2's socket is removed");
    let links = agent.json(&["links"]);
    assert!(
        !links.as_array().unwrap().iter().any(|l| l["ifname"] == eth),
        "{eth} left the library: {links}"
    );
    let back = agent.json(&["port", "add", &format!("vm2={vm2}")]);
    assert_eq!(back["name"], "vm2");
    assert!(Path::new(&vm2).exists());
    assert_eq!(agent.json(&["port", "list"]).as_array().unwrap().len(), 2);
}

#[test]
fn address_add_and_list() {
    let socks = sockets("addr");
    let agent = Agent::start("addr", &[port_arg(&socks, "vm1", "")]);
    let a = agent.json(&["address", "add", "vm1=10.201.0.1/24"]);
    assert_eq!(a["ifname"], "eth0");
    let list = agent.json(&["address", "list"]);
    assert_eq!(
        list,
        serde_json::json!([{ "device": "vm1", "address": "10.201.0.1/24" }])
    );
    let msg = agent.refused(&["address", "add", "vm7=10.201.1.1/24"]);
    assert!(msg.contains("known: vm1"), "{msg}");
    let msg = agent.refused(&["address", "add", "vm1=10.201.1.1/40"]);
    assert!(
        msg.contains("\"10.201.1.1/40\""),
        "names the bad value: {msg}"
    );
    // The kernel's own refusal comes back too.
    let msg = agent.refused(&["address", "add", "vm1=10.201.0.1/24"]);
    assert!(msg.contains("inside the library kernel"), "{msg}");
}

#[test]
fn route_add_and_list() {
    let socks = sockets("route");
    let agent = Agent::start(
        "route",
        &[
            port_arg(&socks, "vm1", ""),
            "--address=vm1=10.203.0.1/24".into(),
        ],
    );
    agent.json(&["route", "add", "10.204.0.0/16,via=10.203.0.9"]);
    let routes = agent.json(&["route", "list"]);
    let routes = routes.as_array().unwrap();
    let find = |dest: &str| routes.iter().find(|r| r["destination"] == dest);
    let added = find("10.204.0.0/16").unwrap_or_else(|| panic!("{routes:?}"));
    assert_eq!(added["via"], "10.203.0.9");
    assert_eq!(added["device"], "vm1");
    let connected = find("10.203.0.0/24").unwrap_or_else(|| panic!("{routes:?}"));
    assert_eq!(connected["ifname"], "eth0");
    let msg = agent.refused(&["route", "add", "10.205.0.0/16,via=10.99.99.1"]);
    assert!(msg.contains("10.205.0.0/16"), "{msg}");
    let msg = agent.refused(&["route", "add", "10.205.0.0/16"]);
    assert!(msg.contains("via="), "{msg}");
}

#[test]
fn links_and_stats() {
    let socks = sockets("stats");
    let agent = Agent::start("stats", &[port_arg(&socks, "vm1", "")]);
    let links = agent.json(&["links"]);
    let links = links.as_array().unwrap();
    assert!(links.iter().any(|l| l["ifname"] == "lo"), "{links:?}");
    let eth0 = links.iter().find(|l| l["ifname"] == "eth0").unwrap();
    assert_eq!(eth0["device"], "vm1");
    assert_eq!(eth0["up"], true);
    assert_eq!(eth0["carrier"], false);

    let stats = agent.json(&["stats"]);
    let port = &stats["ports"][0];
    assert_eq!(port["name"], "vm1");
    for dir in ["to_stack", "to_guest"] {
        assert_eq!(port["copies"][dir]["frames"], 0, "{port}");
        assert_eq!(port["seam"][dir]["copies"], 0, "{port}");
    }
    assert_eq!(port["library"]["link_up"], false);
    let text = ctl(&agent.api, &["stats"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("\"copies\""));
}

#[test]
fn uplink_add_and_list() {
    require_root();
    let socks = sockets("uplink");
    let tap = format!("kag{}", std::process::id() % 100_000);
    let agent = Agent::start("uplink", &[port_arg(&socks, "vm1", "")]);
    let added = agent.json(&["uplink", "add", &format!("up0=tap:{tap}")]);
    assert_eq!(added["ifname"], "eth1");
    let list = agent.json(&["uplink", "list"]);
    assert_eq!(list[0]["name"], "up0");
    assert_eq!(list[0]["spec"], format!("tap:{tap}"));
    let msg = agent.refused(&["uplink", "add", "up1=vde:sw0"]);
    assert!(msg.contains("xdp:IFNAME or discard:"), "{msg}");
    let msg = agent.refused(&["uplink", "add", "up1=packet:knic-no-such-if"]);
    assert!(msg.contains("does not exist"), "{msg}");
}

#[test]
fn tenant_add_list_and_remove() {
    let socks = sockets("tenants");
    let agent = Agent::start("tenants", &[port_arg(&socks, "vm1", "")]);
    let t = agent.json(&["tenant", "add", "t1,subnet=10.70.0.1/24,subnet=fd70::1/64"]);
    assert_eq!(t["vrf"], "vrf-t1", "{t}");
    assert_eq!(t["table"], 1000, "{t}");
    assert_eq!(t["subnets"][0]["prefix"], "10.70.0.0/24", "{t}");
    assert_eq!(t["subnets"][0]["gateway"], "10.70.0.1", "{t}");
    let msg = agent.refused(&["tenant", "add", "t1"]);
    assert!(msg.contains("already the name of a tenant"), "{msg}");
    let msg = agent.refused(&["tenant", "add", "t2,uplink=nope"]);
    assert!(msg.contains("\"nope\""), "{msg}");
    let vm2 = agent.path("vm2.sock");
    agent.json(&[
        "port",
        "add",
        &format!("vm2={vm2},tenant=t1,mac=52:54:00:70:00:02"),
    ]);
    let list = agent.json(&["tenant", "list"]);
    assert_eq!(list[0]["ports"], serde_json::json!(["vm2"]), "{list}");
    // The library kernel's view: vm2's interface is enslaved to the VRF, which is up.
    let links = agent.json(&["links"]);
    let links = links.as_array().unwrap();
    let vm2_link = links.iter().find(|l| l["device"] == "vm2").unwrap();
    assert_eq!(vm2_link["master"], "vrf-t1", "{links:?}");
    assert!(
        links
            .iter()
            .any(|l| l["ifname"] == "vrf-t1" && l["up"] == true),
        "{links:?}"
    );
    // Its anti-spoofing counters exist, all zero.
    let spoof = agent.json(&["antispoof"]);
    assert_eq!(spoof[0]["port"], "vm2", "{spoof}");
    assert_eq!(spoof[0]["drops"]["source_mac"]["packets"], 0, "{spoof}");
    let msg = agent.refused(&[
        "port",
        "add",
        &format!("vm3={},tenant=t9", agent.path("vm3.sock")),
    ]);
    assert!(msg.contains("no tenant is named \"t9\""), "{msg}");
    let msg = agent.refused(&["tenant", "remove", "t1"]);
    assert!(msg.contains("still has ports (vm2)"), "{msg}");
    agent.json(&["port", "remove", "vm2"]);
    assert_eq!(agent.json(&["antispoof"]), serde_json::json!([]));
    agent.json(&["tenant", "remove", "t1"]);
    assert_eq!(agent.json(&["tenant", "list"]), serde_json::json!([]));
    let links = agent.json(&["links"]);
    assert!(
        !links
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["ifname"] == "vrf-t1"),
        "{links}"
    );
    assert_eq!(agent.json(&["nat"]), serde_json::json!([]));
    assert!(agent.json(&["conntrack"]).is_array());
    let msg = agent.refused(&["reload"]);
    assert!(msg.contains("without --config"), "{msg}");
}

/// What the API added survives `kill -9`: the state file brings back the tenant, the port
/// (with its MACs: same creation order), its address and the route, on top of the flags; a
/// corrupt state file stops the next start with a message naming it, and is left alone.
#[test]
fn what_the_api_added_survives_kill_9_and_a_corrupt_state_is_refused() {
    let socks = sockets("state");
    let state = Scratch::new("agent-state-dir");
    let args = vec![
        port_arg(&socks, "vm1", ""),
        "--address=vm1=10.206.0.1/24".into(),
        format!("--state-dir={}", state.0.display()),
    ];
    let mut agent = Agent::start("state", &args);
    let vm2 = socks.0.join("vm2.sock").display().to_string();
    agent.json(&["tenant", "add", "t1,subnet=10.72.0.1/24"]);
    agent.json(&["port", "add", &format!("vm2={vm2},queues=2,tenant=t1")]);
    agent.json(&[
        "port",
        "add",
        &format!("vm3={}", socks.0.join("vm3.sock").display()),
    ]);
    agent.json(&["address", "add", "vm3=10.207.0.1/24"]);
    agent.json(&["route", "add", "10.209.0.0/16,via=10.207.0.9,dev=vm3"]);
    agent.json(&["route", "add", "10.208.0.0/16,via=10.206.0.9"]);
    agent.json(&["port", "remove", "vm3"]);
    let before = agent.json(&["port", "list"]);
    let macs = |ports: &Value| -> Vec<(String, String, String)> {
        ports
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_owned(),
                    p["guest_mac"].as_str().unwrap().to_owned(),
                    p["library_mac"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(macs(&before).len(), 2, "{before}");
    let file = state.0.join("state.json");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(saved["version"], 1, "{saved}");
    assert_eq!(saved["ports"][1]["name"], "vm2", "{saved}");
    assert!(
        saved["addresses"].as_array().unwrap().len() == 1,
        "vm3's address went with it: {saved}"
    );
    assert_eq!(
        saved["routes"].as_array().unwrap().len(),
        1,
        "vm3's route went with it (a restart would fail to add it): {saved}"
    );

    assert!(agent.proc.stop("-KILL", Duration::from_secs(10)));
    drop(agent);
    let agent = Agent::start("state", &args);
    let after = agent.json(&["port", "list"]);
    assert_eq!(macs(&after), macs(&before), "{after}");
    assert_eq!(after[1]["queue_pairs"], 2, "{after}");
    let tenants = agent.json(&["tenant", "list"]);
    assert_eq!(tenants[0]["name"], "t1", "{tenants}");
    assert_eq!(tenants[0]["ports"], serde_json::json!(["vm2"]), "{tenants}");
    let routes = agent.json(&["route", "list"]);
    assert!(
        routes
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["destination"] == "10.208.0.0/16" && r["via"] == "10.206.0.9"),
        "{routes}"
    );
    let addresses = agent.json(&["address", "list"]);
    assert_eq!(addresses.as_array().unwrap().len(), 1, "{addresses}");
    drop(agent);

    // A torn or hand-broken file: the agent refuses to start and says which file.
    std::fs::write(&file, "{\"version\":1,\"ports\":[").unwrap();
    let api = state.0.join("agent.sock");
    let out = Command::new(AGENT)
        .arg("--api-socket")
        .arg(&api)
        .args(&args)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&file.display().to_string()) && err.contains("move it away"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "{\"version\":1,\"ports\":[",
        "never silently reset"
    );
}

#[test]
fn a_bad_config_file_is_refused_before_anything_starts() {
    let dir = Scratch::new("agent-badconfig");
    let file = dir.0.join("agent.toml");
    std::fs::write(&file, "[[tenant]]\nname = \"blue\"\nuplink = \"up0\"\n").unwrap();
    let out = Command::new(AGENT)
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tenant \"blue\" (tenant[0]).uplink = \"up0\"")
            && err.contains("none is defined"),
        "{err}"
    );
    let out = Command::new(AGENT)
        .arg("--config")
        .arg(&file)
        .args(["--port", "vm1=/tmp/x.sock"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
}

#[test]
fn bad_flags_are_refused_with_the_value_and_what_is_allowed() {
    let out = Command::new(AGENT)
        .args(["--port", "vm1=/tmp/x.sock,queues=0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"0\"") && err.contains("1 to 16"), "{err}");
    let out = Command::new(AGENT)
        .args(["--port", "vm1=/nonexistent-dir/x.sock"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent-dir") && err.contains("mkdir"),
        "{err}"
    );
    for bin in [AGENT, KNICCTL] {
        let out = Command::new(bin).arg("--help").output().unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("Examples:"));
    }
    let out = Command::new(KNICCTL)
        .args(["--api-socket", "/tmp/knic-no-agent.sock", "port", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is knic-agent running"), "{err}");
}

#[test]
fn sigterm_stops_cleanly_and_removes_the_sockets() {
    let socks = sockets("term");
    let mut agent = Agent::start("term", &[port_arg(&socks, "vm1", "")]);
    let sock = socks.0.join("vm1.sock");
    assert!(sock.exists());
    assert!(agent.proc.stop("-TERM", Duration::from_secs(20)));
    let status = agent.proc.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!sock.exists(), "the port's socket is removed");
    assert!(!agent.api.exists(), "the API socket is removed");
}

/// Open fds, the agent's own threads, and the library kernel's threads (`linux-kthread`)
/// of process `pid`.
fn fds_and_threads(pid: u32) -> (usize, usize, usize) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let mut own = 0;
    let mut kernel = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let comm = std::fs::read_to_string(task.unwrap().path().join("comm")).unwrap_or_default();
        if comm.trim() == "linux-kthread" {
            kernel += 1;
        } else {
            own += 1;
        }
    }
    (fds, own, kernel)
}

#[test]
fn ports_come_and_go_without_leaks() {
    let socks = sockets("churn");
    let agent = Agent::start("churn", &[port_arg(&socks, "vm1", "")]);
    let vm2 = agent.path("vm2.sock");
    let pid = agent.proc.child.id();
    let cycle = || {
        agent.json(&["port", "add", &format!("vm2={vm2},queues=2")]);
        agent.json(&["port", "remove", "vm2"]);
    };
    cycle();
    let links = agent.json(&["links"]);
    let start = fds_and_threads(pid);
    for _ in 0..20 {
        cycle();
    }
    // The last knicctl connection and the removed port's serving thread end a moment after
    // the answer (the agent sees the client's EOF on its next loop turn): wait for them,
    // a leak never settles. The kernel's worker pool may grow by a thread or two under
    // load (kworkers are made on demand), a per-cycle leak would add 20.
    let settled = std::time::Instant::now();
    let now = loop {
        let now = fds_and_threads(pid);
        // At most as many: the baseline may itself include a closing connection.
        let same = now.0 <= start.0 && now.1 <= start.1 && now.2 <= start.2 + 2;
        if same || settled.elapsed() > Duration::from_secs(5) {
            break now;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        now.0 <= start.0 && now.1 <= start.1,
        "fds and the agent's threads after 20 add/remove cycles: {now:?} (from {start:?})"
    );
    assert!(
        now.2 <= start.2 + 2,
        "kernel threads after 20 add/remove cycles: {} (from {})",
        now.2,
        start.2
    );
    assert_eq!(agent.json(&["links"]), links, "the library's interfaces");
}

/// The udhcpc script of the DHCP test: configures what the lease says and writes busybox's
/// variables to `$KNIC_DHCP_OUT` (ip, mask, router, dns, mtu, lease, serverid).
const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
bound|renew)
  ip addr add "$ip/$mask" dev "$interface"
  [ -n "$router" ] && ip route replace default via "$router" dev "$interface"
  env | grep -E '^(ip|mask|router|dns|mtu|lease|serverid)=' > "$KNIC_DHCP_OUT"
  ;;
esac
exit 0
"#;

/// A TAP uplink of the agent with its host end in a namespace, where busybox `udhcpc` and
/// the host kernel's IPv6 autoconf are the clients.
struct ClientLink {
    ns: test_support::NetNs,
    tap: String,
}

impl ClientLink {
    fn new(tag: &str, tap: &str, mac: &str) -> ClientLink {
        let ns = test_support::NetNs::new(tag);
        let sh = |cmd: String| {
            let out = Command::new("sh").arg("-c").arg(&cmd).output().unwrap();
            assert!(
                out.status.success(),
                "{cmd}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        sh(format!("ip link set {tap} netns {}", ns.name));
        sh(format!(
            "ip -n {0} link set {tap} address {mac} && \
             ip netns exec {0} sysctl -qw net.ipv6.conf.{tap}.accept_ra=1 net.ipv6.conf.{tap}.autoconf=1 && \
             ip -n {0} link set {tap} up",
            ns.name
        ));
        ClientLink {
            ns,
            tap: tap.to_owned(),
        }
    }

    /// Runs `udhcpc` once (DISCOVER, OFFER, REQUEST, ACK) and returns the script's variables.
    fn udhcpc(&self, dir: &Scratch, extra: &[&str]) -> String {
        let script = dir.0.join("udhcpc.sh");
        std::fs::write(&script, UDHCPC_SCRIPT).unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let out_file = dir.0.join(format!("udhcpc-{}.env", self.tap));
        let _ = std::fs::remove_file(&out_file);
        let out = self
            .ns
            .cmd("busybox")
            .args([
                "udhcpc", "-f", "-q", "-n", "-t", "5", "-T", "2", "-i", &self.tap, "-s",
            ])
            .arg(&script)
            .args(extra)
            .env("KNIC_DHCP_OUT", &out_file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "udhcpc got no lease: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(&out_file).unwrap()
    }

    fn sh(&self, cmd: &str) -> String {
        let out = self.ns.cmd("sh").args(["-c", cmd]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[test]
fn dhcp_and_router_adverts_serve_stock_clients_and_leases_survive_a_restart() {
    require_root();
    test_support::require_tool("busybox");
    let id = std::process::id() % 100_000;
    let leases = Scratch::new("dhcp-leases");
    let tap = format!("kdh{id}");
    let args = |tap: &str| {
        vec![
            format!("--uplink=up0=tap:{tap}"),
            "--address=up0=10.213.0.1/24".into(),
            "--address=up0=fd00:213::1/64".into(),
            "--dhcp=up0,pool=10.213.0.100-10.213.0.110,dns=10.213.0.53,mtu=1400,lease=600,static=02:4b:44:00:00:09@10.213.0.9".into(),
            "--ra=up0,interval=4,mtu=1400".into(),
            format!("--lease-dir={}", leases.0.display()),
        ]
    };
    let metrics = format!("127.0.0.1:{}", 20_000 + id % 20_000);
    let mut first = args(&tap);
    first.push(format!("--metrics={metrics}"));
    // A port too, for its per-queue metrics.
    let socks = sockets("dhcp-m");
    first.push(port_arg(&socks, "vm1", ""));
    let mut agent = Agent::start("dhcp", &first);
    let client = ClientLink::new("dhcp1", &tap, "02:4b:44:00:00:01");

    // IPv4 from the agent's DHCP server: address, router, DNS, MTU and lease time, through
    // udhcpc's unicast path (no broadcast flag: the server adds the neighbour entry).
    let env = client.udhcpc(&agent.dir, &[]);
    for want in [
        "ip=10.213.0.100",
        "mask=24",
        "router=10.213.0.1",
        "dns=10.213.0.53",
        "mtu=1400",
        "lease=600",
        "serverid=10.213.0.1",
    ] {
        assert!(
            env.lines().any(|l| l.trim() == want),
            "{want} missing from {env}"
        );
    }
    assert!(
        client
            .sh("ip -4 route show default")
            .contains("via 10.213.0.1")
    );
    // IPv6 from router advertisements: a SLAAC address in the prefix and a default route.
    wait_for(
        "a SLAAC address and an IPv6 default route",
        Duration::from_secs(30),
        || {
            client
                .sh(&format!("ip -6 addr show dev {tap} scope global"))
                .contains("fd00:213:")
                && client.sh("ip -6 route show default").contains("via fe80::")
        },
    );
    assert!(
        client
            .sh(&format!("ip -6 addr show dev {tap} scope global"))
            .contains("dynamic"),
        "SLAAC, not static"
    );
    assert!(
        client
            .sh(&format!("cat /proc/sys/net/ipv6/conf/{tap}/mtu"))
            .trim()
            == "1400",
        "the RA's MTU option"
    );
    for target in ["10.213.0.1", "fd00:213::1"] {
        let out = client
            .ns
            .cmd("ping")
            .args(["-c", "2", "-W", "5", "-w", "15", target])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ping {target}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // Hostile datagrams to the server are dropped and counted by reason.
    let garbage = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
        for p in [b'x', bytes(300), bytes(236)+b'\\x00\\x00\\x00\\x00']:\n    s.sendto(p,('10.213.0.1',67))\n";
    let out = client
        .ns
        .cmd("python3")
        .args(["-c", garbage])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the drops counted", Duration::from_secs(10), || {
        let s = agent.json(&["stats"]);
        let d = &s["dhcp"][0]["drops"];
        d["bad_length"] == 1 && d["bad_magic"] == 2
    });
    let stats = agent.json(&["stats"]);
    let (dhcp, ra) = (&stats["dhcp"][0], &stats["ra"][0]);
    assert_eq!(
        (dhcp["offers"].as_u64(), dhcp["acks"].as_u64()),
        (Some(1), Some(1)),
        "{dhcp}"
    );
    assert!(
        ra["sent_unsolicited"].as_u64().unwrap() + ra["sent_solicited"].as_u64().unwrap() >= 1,
        "{ra}"
    );

    // The same counters over HTTP in the Prometheus text format.
    let scraped = scrape(&metrics, "/metrics");
    assert!(scraped.starts_with("HTTP/1.1 200"), "{scraped}");
    for line in [
        "knic_dhcp_acks_total{device=\"up0\"} 1",
        "knic_dhcp_drops_total{device=\"up0\",reason=\"bad_magic\"} 2",
        "knic_dhcp_drops_total{device=\"up0\",reason=\"bad_length\"} 1",
    ] {
        assert!(
            scraped.lines().any(|l| l == line),
            "{line} not in:\n{scraped}"
        );
    }
    for family in [
        "knic_library_rx_packets_total{device=\"up0\",kind=\"uplink\"}",
        "knic_ra_sent_unsolicited_total{device=\"up0\"}",
    ] {
        assert!(scraped.contains(family), "{family} not in:\n{scraped}");
    }
    assert!(
        scraped
            .lines()
            .any(|l| l == "knic_vhost_tx_packets_total{port=\"vm1\",queue=\"0\"} 0"),
        "{scraped}"
    );
    assert!(
        scraped.contains(
            "knic_vhost_drops_total{port=\"vm1\",queue=\"0\",reason=\"tx_malformed_header\"} 0"
        ),
        "every engine drop reason is a label value: {scraped}"
    );
    // The library kernel's own counters (its /proc/net/snmp): the DHCP server's socket
    // received the client's DISCOVER and REQUEST (and the test's bad messages) through it.
    let udp_in = scraped
        .lines()
        .find_map(|l| l.strip_prefix("knic_stack_Udp_InDatagrams_total "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no knic_stack_Udp_InDatagrams_total in:\n{scraped}"));
    assert!(
        udp_in >= 2,
        "{udp_in} UDP datagrams received by the library"
    );
    for family in [
        "# TYPE knic_stack_Tcp_CurrEstab gauge",
        "knic_stack_Ip_InReceives_total ",
        "knic_stack_TcpExt_TCPTimeouts_total ",
        "knic_stack_Icmp6_OutMsgs_total ",
    ] {
        assert!(scraped.contains(family), "{family} not in:\n{scraped}");
    }
    assert!(scrape(&metrics, "/other").starts_with("HTTP/1.1 404"));

    let list = agent.json(&["leases"]);
    let lease = &list[0];
    assert_eq!(
        (
            lease["device"].as_str(),
            lease["mac"].as_str(),
            lease["ip"].as_str(),
            lease["state"].as_str()
        ),
        (
            Some("up0"),
            Some("02:4b:44:00:00:01"),
            Some("10.213.0.100"),
            Some("bound")
        ),
        "{list}"
    );
    let text = String::from_utf8_lossy(&ctl(&agent.api, &["leases"]).stdout).into_owned();
    assert!(
        text.contains("ip=10.213.0.100") && text.contains("state=bound"),
        "{text}"
    );

    // Restart: the lease is on disk, so the address stays with its client; another client
    // (this time with the broadcast flag) gets the next one, and the fixed MAC its own.
    assert!(agent.proc.stop("-TERM", Duration::from_secs(20)));
    drop(client);
    let file = std::fs::read_to_string(leases.0.join("up0.json")).unwrap();
    assert!(
        file.contains("10.213.0.100") && file.contains("02:4b:44:00:00:01"),
        "{file}"
    );
    let tap2 = format!("kdi{id}");
    agent = Agent::start("dhcp2", &args(&tap2));
    let listed = agent.json(&["leases"]);
    assert_eq!(
        listed[0]["ip"], "10.213.0.100",
        "loaded from the file: {listed}"
    );
    let other = ClientLink::new("dhcp2", &tap2, "02:4b:44:00:00:02");
    let env = other.udhcpc(&agent.dir, &["-B"]);
    assert!(env.contains("ip=10.213.0.101"), "{env}");
    run_static(&other, &agent.dir);
}

/// The client with the fixed MAC gets its fixed address, outside the pool.
fn run_static(link: &ClientLink, dir: &Scratch) {
    link.sh(&format!("ip link set {0} down && ip link set {0} address 02:4b:44:00:00:09 && ip addr flush dev {0} && ip link set {0} up", link.tap));
    let env = link.udhcpc(dir, &[]);
    assert!(env.contains("ip=10.213.0.9"), "{env}");
}

/// `GET path` on `addr`; the whole response.
fn scrape(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    dechunk(&out)
}

/// The response with a chunked body (RFC 9112 §7.1) decoded, as a scraper sees it: a
/// line may lie across a chunk boundary, so matching lines of the raw bytes would fail
/// or pass by where the server happened to cut.
fn dechunk(response: &str) -> String {
    let Some((head, mut body)) = response.split_once("\r\n\r\n") else {
        return response.to_owned();
    };
    if !head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"))
    {
        return response.to_owned();
    }
    let mut out = format!("{head}\r\n\r\n");
    loop {
        let (size, rest) = body.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16)
            .expect("a hexadecimal chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = rest[size..]
            .strip_prefix("\r\n")
            .expect("CRLF after a chunk");
    }
}

/// `knicctl sysctl` reads and writes the library kernel's sysctls as sysctl(8) does the
/// host's, several per call, and names what is wrong with a bad one (going on with the rest).
#[test]
fn sysctls_are_read_and_written_in_the_library_kernel() {
    let socks = sockets("sysctl");
    let agent = Agent::start("sysctl", &[port_arg(&socks, "vm1", "")]);
    let host_cc = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control").unwrap();
    let v = agent.json(&["sysctl", "net.ipv4.tcp_congestion_control"]);
    assert_eq!(v["value"], "cubic", "{v}");
    let out = ctl(
        &agent.api,
        &[
            "sysctl",
            "net.ipv4.tcp_congestion_control=bbr",
            "net.ipv4.tcp_rmem=4096 131072 4194304",
            "net.core.somaxconn",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "net.ipv4.tcp_congestion_control = bbr\n\
         net.ipv4.tcp_rmem = 4096\t131072\t4194304\n\
         net.core.somaxconn = 4096\n"
    );
    // The library's, not the host's.
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control").unwrap(),
        host_cc
    );
    let v = agent.json(&["sysctl", "net.ipv4.tcp_congestion_control"]);
    assert_eq!(v["value"], "bbr", "{v}");

    let msg = agent.refused(&["sysctl", "net.ipv4.no_such_thing"]);
    assert!(msg.contains("no sysctl net.ipv4.no_such_thing"), "{msg}");
    let msg = agent.refused(&["sysctl", "net.ipv4.tcp_congestion_control=warp"]);
    assert!(
        msg.contains("net.ipv4.tcp_congestion_control") && msg.contains("No such file"),
        "{msg}"
    );
    for bad in ["../../etc/passwd", "net/ipv4/ip_forward", "net..ipv4"] {
        let msg = agent.refused(&["sysctl", bad]);
        assert!(msg.contains("is not a sysctl name"), "{bad}: {msg}");
    }
    // One bad setting among good ones: the others still happen, the exit status says no.
    let out = ctl(
        &agent.api,
        &[
            "sysctl",
            "net.ipv4.nope=1",
            "net.ipv4.tcp_congestion_control=cubic",
        ],
    );
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "net.ipv4.tcp_congestion_control = cubic\n"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("net.ipv4.nope"));
}
