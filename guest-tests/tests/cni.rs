//! knic-cni as a container runtime runs it, against a real knic-agent: environment and
//! stdin JSON, a pod network namespace (`cni-pod-PID`), Debian's reference plugins
//! (`host-local` for IPAM, `bandwidth` and `portmap` chained after ours with prevResult
//! passed along, as libcni does). The pod pings a peer behind the agent's veth uplink
//! through the library kernel (iputils checks the echoed pattern), CHECK and STATUS pass,
//! DEL leaves nothing (no netdev in the pod or the agent's namespace, no agent uplink or
//! library interface, no lease) and is idempotent; GC removes what is not listed; a
//! vhost-user attachment's socket is in the result and goes with DEL; the error paths that
//! need the agent (refused: 100, CHECK mismatch: 101, a broken IPAM plugin: 102, a second
//! ADD: 7); a netdev attachment (a veth end moved into the pod, its peer the agent's
//! uplink) and its return on DEL. And a real runtime: Debian's podman (CNI backend) runs a container on
//! `deploy/cni/podman`'s network. Needs root, containernetworking-plugins, iputils-ping,
//! podman and runc (`deploy/dev/setup-debian.sh`), and the workspace's binaries built.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use guest_tests::agent::{KnicAgent, PEER_IP, Topology, UplinkKind};
use guest_tests::{Scratch, require_root, run, serial, workspace_bin};
use serde_json::{Value, json};

const PLUGINS: &str = "/usr/lib/cni";
const NET: &str = "knic-pods";

/// A pod's network namespace, deleted on drop.
struct Pod {
    name: String,
}

impl Pod {
    fn new(tag: &str) -> Pod {
        let name = format!("cni-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(Command::new("ip").args(["netns", "add", &name]));
        run(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]));
        Pod { name }
    }

    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    fn links(&self) -> Vec<String> {
        host_links(&self.name)
    }

    /// The pod pings the peer three times with `size`-byte payloads of `pattern` (hex);
    /// iputils compares each reply's payload with what it sent.
    fn ping_peer(&self, agent: &KnicAgent, pattern: &str, size: u32) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "ping", "-c", "3", "-W", "5"])
            .args(["-p", pattern, "-s", &size.to_string(), PEER_IP])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("3 received") && !text.contains("wrong data"),
            "pod -> peer: {text}\n{}",
            agent.log_text()
        );
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Runs plugin `plugin` (a path) in the agent's namespace `ns` as a runtime would.
fn exec(ns: &str, plugin: &Path, env: &[(&str, &str)], conf: &Value) -> (bool, Value) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(plugin)
        .env("CNI_PATH", PLUGINS)
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
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    eprintln!(
        "{} {:?} -> {} {v} {}",
        plugin.display(),
        env.first(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    (out.status.success(), v)
}

/// The network list: knic-cni, then bandwidth and portmap.
struct Net {
    ns: String,
    knic: Value,
    chained: Vec<Value>,
}

impl Net {
    fn plugin(conf: &Value) -> PathBuf {
        match conf["type"].as_str().unwrap() {
            "knic-cni" => workspace_bin("knic-cni"),
            t => PathBuf::from(PLUGINS).join(t),
        }
    }

    /// The whole list (ours first), each plugin given the list's name and version, and
    /// prevResult from the one before (libcni's ADD); the final result.
    fn add(&self, env: &[(&str, &str)]) -> Value {
        let mut prev: Option<Value> = None;
        for p in std::iter::once(&self.knic).chain(&self.chained) {
            let mut conf = p.clone();
            conf["name"] = json!(NET);
            conf["cniVersion"] = json!("1.0.0");
            if let Some(prev) = &prev {
                conf["prevResult"] = prev.clone();
            }
            let (ok, v) = exec(&self.ns, &Self::plugin(p), &with(env, "ADD"), &conf);
            assert!(ok, "ADD by {} failed: {v}", p["type"]);
            prev = Some(v);
        }
        prev.unwrap()
    }

    /// CHECK (each with the final result) or DEL (reverse order, with it).
    fn each(&self, env: &[(&str, &str)], command: &str, result: &Value) {
        let mut list: Vec<&Value> = std::iter::once(&self.knic).chain(&self.chained).collect();
        if command == "DEL" {
            list.reverse();
        }
        for p in list {
            let mut conf = p.clone();
            conf["name"] = json!(NET);
            conf["cniVersion"] = json!("1.0.0");
            conf["prevResult"] = result.clone();
            let (ok, v) = exec(&self.ns, &Self::plugin(p), &with(env, command), &conf);
            assert!(ok, "{command} by {} failed: {v}", p["type"]);
        }
    }
}

fn with<'a>(env: &[(&'a str, &'a str)], command: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut e = vec![("CNI_COMMAND", command)];
    e.extend_from_slice(env);
    e
}

fn knic_conf(api: &Path, dir: &Path, extra: Value) -> Value {
    let mut c = json!({
        "type": "knic-cni",
        "agentSocket": api,
        "socketDir": dir.join("sockets"),
        "ipam": {
            "type": "host-local",
            "dataDir": dir.join("ipam"),
            "ranges": [[{
                "subnet": "10.210.50.0/24",
                "rangeStart": "10.210.50.10",
                "rangeEnd": "10.210.50.20",
                "gateway": "10.210.50.1"
            }]],
            "routes": [{ "dst": "0.0.0.0/0" }]
        }
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn names(agent: &KnicAgent, list: &str) -> Vec<String> {
    agent
        .ctl(&[list, "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Interfaces in namespace `ns` (the agent's, or a pod's).
fn host_links(ns: &str) -> Vec<String> {
    let out = run(Command::new("ip").args(["-n", ns, "-j", "link", "show"]));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_owned())
        .collect()
}

fn leases(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("ipam").join(NET))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("10."))
                .collect()
        })
        .unwrap_or_default()
}

fn setup() -> (Topology, Scratch, KnicAgent) {
    require_root();
    for p in ["host-local", "bandwidth", "portmap"] {
        assert!(
            Path::new(PLUGINS).join(p).is_file(),
            "{PLUGINS}/{p} is missing: run deploy/dev/setup-debian.sh (containernetworking-plugins)"
        );
    }
    let topo = Topology::new("cni");
    let dir = Scratch::new("cni");
    let agent = KnicAgent::start(
        &topo.agent_ns,
        &dir.0,
        &Topology::agent_args(UplinkKind::Packet, &dir.0, 0, ""),
    );
    (topo, dir, agent)
}

#[test]
fn tap_pod_reaches_the_peer_through_the_agent_and_del_leaves_nothing() {
    let _one = serial();
    let (topo, dir, agent) = setup();
    let pod = Pod::new("pod");
    let ns = topo.agent_ns.name.clone();
    let links_before = agent.library_links();
    let net = Net {
        ns: ns.clone(),
        knic: knic_conf(&agent.api, &dir.0, json!({ "kind": "tap", "mtu": 1500 })),
        chained: vec![
            json!({ "type": "bandwidth", "capabilities": { "bandwidth": true } }),
            json!({ "type": "portmap", "capabilities": { "portMappings": true }, "snat": true,
                    "runtimeConfig": { "portMappings": [
                        { "hostPort": 18080, "containerPort": 80, "protocol": "tcp" } ] } }),
        ],
    };
    let netns = pod.path();
    let env = [
        ("CNI_CONTAINERID", "pod1"),
        ("CNI_NETNS", netns.as_str()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "IgnoreUnknown=1;MAC=02:4b:43:00:00:01"),
    ];
    let result = net.add(&env);
    // Our result came through both reference plugins.
    assert_eq!(result["interfaces"][0]["name"], "eth0", "{result}");
    assert_eq!(result["interfaces"][0]["sandbox"], netns.as_str());
    assert_eq!(result["interfaces"][0]["mac"], "02:4b:43:00:00:01");
    let addr = result["ips"][0]["address"].as_str().unwrap().to_owned();
    assert!(
        addr.starts_with("10.210.50.") && addr.ends_with("/24"),
        "{result}"
    );
    assert_eq!(result["ips"][0]["gateway"], "10.210.50.1");
    let pod_ip = addr.split('/').next().unwrap().to_owned();
    // portmap did its part in the agent's namespace.
    let nat = run(Command::new("ip").args(["netns", "exec", &ns, "iptables-save", "-t", "nat"]));
    assert!(
        String::from_utf8_lossy(&nat.stdout).contains("18080"),
        "portmap's DNAT rule"
    );

    // The pod's interface is the agent's TAP, addressed as IPAM said.
    assert_eq!(pod.links(), ["lo", "eth0"]);
    let a = run(Command::new("ip").args(["-n", &pod.name, "-br", "addr", "show", "eth0"]));
    assert!(String::from_utf8_lossy(&a.stdout).contains(&addr));
    let port = names(&agent, "port")
        .into_iter()
        .find(|n| n.starts_with("cni-"))
        .expect("the attachment is an agent TAP port");
    let routes = agent.ctl(&["route", "list"]).to_string();
    assert!(
        routes.contains(&pod_ip),
        "the library routes to the pod: {routes}"
    );

    // Through the library kernel to the peer and back; iputils compares each reply's
    // payload with the pattern it sent.
    pod.ping_peer(&agent, "6b6e69632d636e69", 200);
    // And the peer reaches the pod (the peer routes 10.210.0.0/16 via the library).
    topo.peer_ping(&pod_ip, 2);

    // CHECK (ours, with the result) and STATUS. bandwidth's CHECK (like its shaping) looks
    // for the host end of a veth, which a TAP does not have: it says so. (portmap 1.1.1's
    // CHECK of an IPv4-only result looks for an IPv6 chain it never made, so it is not run.)
    let check = Net {
        ns: ns.clone(),
        knic: net.knic.clone(),
        chained: vec![],
    };
    check.each(&env, "CHECK", &result);
    let mut bw = net.chained[0].clone();
    bw["name"] = json!(NET);
    bw["cniVersion"] = json!("1.0.0");
    bw["prevResult"] = result.clone();
    let (ok, v) = exec(&ns, &Net::plugin(&bw), &with(&env, "CHECK"), &bw);
    assert!(!ok && v["msg"].as_str().unwrap().contains("veth"), "{v}");
    let (ok, v) = exec(
        &ns,
        &workspace_bin("knic-cni"),
        &[("CNI_COMMAND", "STATUS")],
        &json!({ "cniVersion": "1.1.0", "name": NET, "type": "knic-cni", "agentSocket": agent.api }),
    );
    assert!(ok && v.is_null(), "STATUS: {v}");
    // CHECK that finds another address than prevResult's: 101.
    let mut wrong = result.clone();
    wrong["ips"][0]["address"] = json!("10.210.50.99/24");
    let mut conf = net.knic.clone();
    conf["name"] = json!(NET);
    conf["cniVersion"] = json!("1.1.0");
    conf["prevResult"] = wrong;
    let (ok, v) = exec(&ns, &workspace_bin("knic-cni"), &with(&env, "CHECK"), &conf);
    assert!(!ok && v["code"] == 101, "{v}");
    // A second ADD of the same attachment: 7, and the first is untouched.
    let mut conf = net.knic.clone();
    conf["name"] = json!(NET);
    conf["cniVersion"] = json!("1.1.0");
    let (ok, v) = exec(&ns, &workspace_bin("knic-cni"), &with(&env, "ADD"), &conf);
    assert!(!ok && v["code"] == 7, "{v}");
    assert_eq!(pod.links(), ["lo", "eth0"]);

    // DEL (reverse order): nothing left anywhere.
    net.each(&env, "DEL", &result);
    assert_eq!(
        pod.links(),
        ["lo"],
        "the pod's interface went with the agent's TAP"
    );
    assert!(!names(&agent, "port").contains(&port));
    assert!(
        !host_links(&ns).iter().any(|l| l.starts_with("kc")),
        "no TAP left in the agent's namespace: {:?}",
        host_links(&ns)
    );
    assert_eq!(agent.library_links(), links_before);
    assert!(!agent.ctl(&["route", "list"]).to_string().contains(&pod_ip));
    assert!(leases(&dir.0).is_empty(), "host-local's lease released");
    let nat = run(Command::new("ip").args(["netns", "exec", &ns, "iptables-save", "-t", "nat"]));
    assert!(!String::from_utf8_lossy(&nat.stdout).contains("18080"));
    // DEL again (and with the pod gone) succeeds.
    net.each(&env, "DEL", &result);
    drop(pod);
    net.each(&env, "DEL", &result);
}

/// The pod's `ifname`: its index and whether it has a carrier (`ip -j link`).
fn pod_link(pod: &Pod, ifname: &str) -> Option<(u64, bool)> {
    let out = Command::new("ip")
        .args(["-n", &pod.name, "-j", "link", "show", "dev", ifname])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let l = &v[0];
    let flags = l["flags"].as_array()?;
    Some((
        l["ifindex"].as_u64()?,
        !flags.iter().any(|f| f == "NO-CARRIER"),
    ))
}

/// A tap pod keeps its interface while the agent is down (killed with SIGKILL): the TAP is
/// the agent's in the pod's namespace and persistent, so the restarted agent (same flags,
/// its state file) attaches to the same device and the pod reaches the peer again. A pod
/// removed while the agent was down does not stop it from starting; its DEL still works.
#[test]
fn a_tap_pod_keeps_its_interface_across_an_agent_restart() {
    let _one = serial();
    require_root();
    let topo = Topology::new("cnirs");
    let dir = Scratch::new("cnirs");
    let mut args = Topology::agent_args(UplinkKind::Packet, &dir.0, 0, "");
    args.push(format!("--state-dir={}", dir.0.join("state").display()));
    let mut agent = KnicAgent::start(&topo.agent_ns, &dir.0, &args);
    let ns = topo.agent_ns.name.clone();
    let net = Net {
        ns: ns.clone(),
        knic: knic_conf(&agent.api, &dir.0, json!({ "kind": "tap" })),
        chained: vec![],
    };
    let (pod, gone) = (Pod::new("stays"), Pod::new("goes"));
    let (path, gone_path) = (pod.path(), gone.path());
    let env = [
        ("CNI_CONTAINERID", "stays"),
        ("CNI_NETNS", path.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    let gone_env = [
        ("CNI_CONTAINERID", "goes"),
        ("CNI_NETNS", gone_path.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    let result = net.add(&env);
    let gone_result = net.add(&gone_env);
    pod.ping_peer(&agent, "6b6e69632d7273", 100);
    let (index, carrier) = pod_link(&pod, "eth0").expect("the pod's eth0");
    assert!(carrier, "a served TAP has a carrier");

    assert!(
        agent.proc.stop("-KILL", Duration::from_secs(10)),
        "kill the agent"
    );
    let (still, carrier) = pod_link(&pod, "eth0").expect("eth0 outlived the agent");
    assert_eq!(still, index, "the same device");
    assert!(!carrier, "with nobody attached the TAP has no carrier");
    drop(gone);

    agent = KnicAgent::start(&topo.agent_ns, &dir.0, &args);
    assert_eq!(
        pod_link(&pod, "eth0"),
        Some((index, true)),
        "attached again"
    );
    let ports = names(&agent, "port");
    assert_eq!(
        ports.len(),
        1,
        "the gone pod's port is not restored: {ports:?}"
    );
    assert!(
        agent.log_text().contains("its network namespace is gone"),
        "{}",
        agent.log_text()
    );
    pod.ping_peer(&agent, "6b6e69632d7273", 100);

    net.each(&gone_env, "DEL", &gone_result);
    net.each(&env, "DEL", &result);
    assert_eq!(pod.links(), ["lo"], "DEL deletes the persistent TAP");
    assert!(names(&agent, "port").is_empty());
    assert!(leases(&dir.0).is_empty(), "host-local's leases released");
}

#[test]
fn gc_vhost_user_and_the_agents_refusals() {
    let _one = serial();
    let (topo, dir, agent) = setup();
    let ns = topo.agent_ns.name.clone();
    let pod = Pod::new("gc");
    let pod_b = Pod::new("gcb");
    let netns = pod.path();
    let netns_b = pod_b.path();
    let knic = workspace_bin("knic-cni");
    let conf = |extra: Value| {
        let mut c = knic_conf(&agent.api, &dir.0, extra);
        c["name"] = json!(NET);
        c["cniVersion"] = json!("1.1.0");
        c
    };
    let env = |id: &'static str, ifname: &'static str| {
        vec![
            ("CNI_CONTAINERID", id),
            (
                "CNI_NETNS",
                if id == "b" {
                    netns_b.as_str()
                } else {
                    netns.as_str()
                },
            ),
            ("CNI_IFNAME", ifname),
        ]
    };

    let must = |id: &'static str, ifname: &'static str, command: &str, c: &Value| {
        let (ok, v) = exec(&ns, &knic, &with(&env(id, ifname), command), c);
        assert!(ok, "{command} {id}/{ifname}: {v}");
        v
    };

    // GC: two attachments, one listed as valid; the other goes (agent side and TAP).
    must("a", "eth0", "ADD", &conf(json!({})));
    must("b", "net1", "ADD", &conf(json!({})));
    assert_eq!(pod.links(), ["lo", "eth0"]);
    assert_eq!(pod_b.links(), ["lo", "net1"]);
    let mut gc = conf(json!({}));
    gc["cni.dev/valid-attachments"] = json!([{ "containerID": "a", "ifname": "eth0" }]);
    let (ok, v) = exec(&ns, &knic, &[("CNI_COMMAND", "GC")], &gc);
    assert!(ok && v.is_null(), "GC: {v}");
    assert_eq!(pod.links(), ["lo", "eth0"], "GC kept a/eth0");
    assert_eq!(pod_b.links(), ["lo"], "GC removed b/net1");
    assert_eq!(
        names(&agent, "port")
            .iter()
            .filter(|n| n.starts_with("cni-"))
            .count(),
        1
    );
    must("a", "eth0", "DEL", &conf(json!({})));
    // b's lease is released by its DEL (host-local 1.1.1 has no GC); the runtime DELs
    // every attachment it knows before GC.
    must("b", "net1", "DEL", &conf(json!({})));
    assert!(leases(&dir.0).is_empty(), "{:?}", leases(&dir.0));
    assert_eq!(pod.links(), ["lo"]);

    // vhost-user: the socket is the agent's port, named in the result; DEL removes both.
    let vu = conf(json!({ "kind": "vhost-user" }));
    let v = must("vm", "eth0", "ADD", &vu);
    let socket = PathBuf::from(v["interfaces"][0]["socketPath"].as_str().unwrap());
    assert!(socket.starts_with(dir.0.join("sockets")), "{v}");
    assert!(v["interfaces"][0]["sandbox"].is_null());
    let port = names(&agent, "port");
    assert_eq!(port.len(), 1, "{port:?}");
    assert!(agent.port(&port[0])["socket"].as_str().unwrap() == socket.to_str().unwrap());
    assert!(socket.exists());
    assert_eq!(
        pod.links(),
        ["lo"],
        "a vhost-user attachment touches no netns"
    );
    must("vm", "eth0", "DEL", &vu);
    assert!(names(&agent, "port").is_empty());
    assert!(!socket.exists());
    must("vm", "eth0", "DEL", &vu); // DEL is idempotent

    // 100: the agent refuses (no such tenant); nothing is left and the lease is back.
    let bad = conf(json!({ "kind": "vhost-user", "tenant": "nosuch" }));
    let (ok, v) = exec(&ns, &knic, &with(&env("t", "eth0"), "ADD"), &bad);
    assert!(!ok && v["code"] == 100, "{v}");
    assert!(v["details"].as_str().unwrap().contains("nosuch"), "{v}");
    assert!(names(&agent, "port").is_empty());
    assert!(leases(&dir.0).is_empty());

    // 102: an IPAM plugin that answers nonsense.
    let fake = dir.0.join("bin");
    std::fs::create_dir_all(&fake).unwrap();
    std::fs::write(
        fake.join("broken-ipam"),
        "#!/bin/sh\necho nonsense\nexit 1\n",
    )
    .unwrap();
    run(Command::new("chmod")
        .arg("+x")
        .arg(fake.join("broken-ipam")));
    let mut broken = conf(json!({}));
    broken["ipam"] = json!({ "type": "broken-ipam" });
    let fake_path = fake.display().to_string();
    let mut e = with(&env("x", "eth0"), "ADD");
    e.push(("CNI_PATH", fake_path.as_str()));
    let (ok, v) = exec(&ns, &knic, &e, &broken);
    assert!(!ok && v["code"] == 102, "{v}");
    assert_eq!(pod.links(), ["lo"]);
    assert!(!names(&agent, "port").iter().any(|n| n.starts_with("cni-")));
}

/// `ping -c 3 -w 15` from a pod (from `source` if given): whether all three came back.
fn pod_pings(pod: &Pod, to: &str, source: Option<&str>) -> bool {
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns", "exec", &pod.name, "ping", "-c", "3", "-W", "2", "-w", "15",
    ]);
    if let Some(s) = source {
        cmd.args(["-I", s]);
    }
    let out = cmd.arg(to).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{} -> {to} (from {source:?}): {text}", pod.name);
    out.status.success() && text.contains("3 received")
}

/// `tap` attachments in an agent tenant: each pod's TAP is a port of the tenant (its VRF),
/// with the MAC the agent gave it and the address IPAM gave the pod pinned by the port's
/// anti-spoofing. The tenant's two pods reach each other, and the peer through the
/// tenant's SNAT, with nothing dropped; a pod that takes another source address gets no
/// reply and its drops are counted; DEL leaves nothing.
#[test]
fn tap_pods_in_a_tenant_reach_each_other_and_the_peer_and_cannot_spoof() {
    let _one = serial();
    let (topo, dir, agent) = setup();
    let ns = topo.agent_ns.name.clone();
    agent.ctl(&["tenant", "add", "blue,uplink=up0,subnet=10.210.60.1/24"]);
    let links_before = agent.library_links();
    let pods = [Pod::new("ta"), Pod::new("tb")];
    let paths: Vec<String> = pods.iter().map(Pod::path).collect();
    let knic = workspace_bin("knic-cni");
    let mut conf = knic_conf(
        &agent.api,
        &dir.0,
        json!({ "kind": "tap", "tenant": "blue" }),
    );
    conf["ipam"]["ranges"] = json!([[{
        "subnet": "10.210.60.0/24",
        "rangeStart": "10.210.60.10",
        "rangeEnd": "10.210.60.20",
        "gateway": "10.210.60.1"
    }]]);
    conf["name"] = json!(NET);
    conf["cniVersion"] = json!("1.1.0");
    let ids = ["ta", "tb"];
    let env = |i: usize| {
        vec![
            ("CNI_CONTAINERID", ids[i]),
            ("CNI_NETNS", paths[i].as_str()),
            ("CNI_IFNAME", "eth0"),
        ]
    };
    let mut ips = Vec::new();
    let mut ports = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let (ok, v) = exec(&ns, &knic, &with(&env(i), "ADD"), &conf);
        assert!(ok, "ADD {id}: {v}");
        ips.push(
            v["ips"][0]["address"]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_owned(),
        );
        // The pod's MAC is its port's guest MAC, which the agent gave the TAP.
        let mac = v["interfaces"][0]["mac"].as_str().unwrap().to_owned();
        let list = agent.ctl(&["port", "list"]);
        let port = list
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["guest_mac"] == mac.as_str())
            .unwrap_or_else(|| panic!("no port has the pod's MAC {mac}: {list}"));
        // The agent made the TAP in the pod, under the pod's interface name.
        assert_eq!(port["tap"], "eth0", "{port}");
        assert_eq!(port["netns"], paths[i].as_str(), "{port}");
        assert!(port["socket"].is_null(), "{port}");
        ports.push(port["name"].as_str().unwrap().to_owned());
    }
    let tenants = agent.ctl(&["tenant", "list"]).to_string();
    for p in &ports {
        assert!(
            tenants.contains(p.as_str()),
            "{p} is a port of blue: {tenants}"
        );
    }

    // Within the tenant and out through its SNAT; nothing honest is dropped.
    assert!(pod_pings(&pods[0], &ips[1], None), "{}", agent.log_text());
    assert!(pod_pings(&pods[1], &ips[0], None), "{}", agent.log_text());
    assert!(pod_pings(&pods[0], PEER_IP, None), "{}", agent.log_text());
    let drops = |port: &str| -> u64 {
        let v = agent.ctl(&["antispoof"]);
        let entry = v
            .as_array()
            .and_then(|a| a.iter().find(|p| p["port"] == port))
            .unwrap_or_else(|| panic!("no anti-spoofing counters for {port}: {v}"))
            .clone();
        entry["drops"]
            .as_object()
            .unwrap()
            .values()
            .map(|r| r["packets"].as_u64().unwrap())
            .sum()
    };
    assert_eq!((drops(&ports[0]), drops(&ports[1])), (0, 0));

    // Pod a takes an address IPAM did not give it: nothing comes back, and it is counted.
    let spoofed = "10.210.60.77";
    run(Command::new("ip").args([
        "-n",
        &pods[0].name,
        "addr",
        "add",
        &format!("{spoofed}/32"),
        "dev",
        "eth0",
    ]));
    assert!(!pod_pings(&pods[0], &ips[1], Some(spoofed)));
    assert!(drops(&ports[0]) >= 3, "{}", agent.ctl(&["antispoof"]));
    assert_eq!(drops(&ports[1]), 0);
    // Its own address still works.
    assert!(pod_pings(&pods[0], &ips[1], Some(&ips[0])));

    for (i, (id, pod)) in ids.iter().zip(&pods).enumerate() {
        let (ok, v) = exec(&ns, &knic, &with(&env(i), "DEL"), &conf);
        assert!(ok, "DEL {id}: {v}");
        assert_eq!(pod.links(), ["lo"]);
    }
    assert!(!names(&agent, "port").iter().any(|n| n.starts_with("cni-")));
    assert!(!host_links(&ns).iter().any(|l| l.starts_with("kc")));
    assert_eq!(agent.library_links(), links_before);
    assert!(leases(&dir.0).is_empty(), "{:?}", leases(&dir.0));
}

/// podman as the runtime: a podman command (its CNI backend, from `deploy/cni/podman`'s
/// `containers.conf` with this test's directories) run in the agent's namespace with the
/// test's own storage, so nothing of the host's podman is touched.
struct Podman {
    ns: String,
    dir: PathBuf,
    conf: PathBuf,
}

impl Podman {
    fn new(ns: &str, dir: &Path, net_d: &Path, plugins: &Path) -> Podman {
        let example = podman_example("containers.conf");
        let conf = example
            .replace(
                r#"cni_plugin_dirs = ["/usr/lib/cni"]"#,
                &format!("cni_plugin_dirs = [{:?}]", plugins.display().to_string()),
            )
            .replace(
                r#"network_config_dir = "/etc/cni/net.d""#,
                &format!("network_config_dir = {:?}", net_d.display().to_string()),
            );
        assert!(
            !conf.contains("/usr/lib/cni") && !conf.contains("/etc/cni"),
            "deploy/cni/podman/containers.conf no longer has the lines this test replaces"
        );
        let path = dir.join("containers.conf");
        std::fs::write(&path, conf).unwrap();
        Podman {
            ns: ns.to_owned(),
            dir: dir.to_owned(),
            conf: path,
        }
    }

    /// `podman ARGS`. nsenter, not `ip netns exec`: the latter mounts a sysfs of its own,
    /// hiding the cgroup hierarchy the runtime needs.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(guest_tests::require_tool("nsenter"));
        c.arg(format!("--net=/var/run/netns/{}", self.ns))
            .arg(guest_tests::require_tool("podman"))
            .env("CONTAINERS_CONF", &self.conf)
            .arg("--root")
            .arg(self.dir.join("storage"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"])
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = run(&mut self.cmd(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self
            .cmd(&["rm", "--all", "--force", "--time", "0"])
            .output();
    }
}

fn podman_example(file: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/cni/podman")
        .join(file);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A root filesystem of busybox (sh, ip, ping, wget, sha256sum): the container runs from it
/// (`--rootfs`), nothing is pulled.
fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "etc", "tmp", "run"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(
        guest_tests::require_tool("busybox"),
        root.join("bin/busybox"),
    )
    .unwrap();
    for applet in ["sh", "ip", "ping", "wget", "sha256sum", "sleep", "cat"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    root
}

/// Network namespaces on the host (podman makes one per container under /run/netns).
fn netns_names() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/var/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Debian's podman, with its CNI backend and `deploy/cni/podman`'s files, starts a
/// container from a local busybox root filesystem on the `knic-pods` network: its eth0 is
/// the agent's TAP, it pings the peer behind the agent's uplink and fetches a 1 MiB file from
/// an HTTP server in the peer's namespace, byte-exact (SHA-256), all through the library
/// kernel. `podman rm` leaves nothing: no agent uplink, library interface or route, no TAP,
/// no lease, no network namespace, no container.
#[test]
fn podman_container_reaches_the_peer_through_the_agent_and_rm_leaves_nothing() {
    let _one = serial();
    require_root();
    for tool in ["podman", "runc", "busybox", "nsenter"] {
        guest_tests::require_tool(tool);
    }
    let (topo, dir, agent) = setup();
    let ns = topo.agent_ns.name.clone();
    let links_before = agent.library_links();
    let netns_before = netns_names();

    // The plugins podman may run: ours and the reference ones the example chains.
    let plugins = dir.0.join("cni-bin");
    std::fs::create_dir_all(&plugins).unwrap();
    std::os::unix::fs::symlink(workspace_bin("knic-cni"), plugins.join("knic-cni")).unwrap();
    for p in ["host-local", "portmap", "bandwidth"] {
        std::os::unix::fs::symlink(Path::new(PLUGINS).join(p), plugins.join(p)).unwrap();
    }
    // The example network list, pointed at this agent and this test's IPAM directory.
    let mut list: Value = serde_json::from_str(&podman_example("knic-pods.conflist")).unwrap();
    assert_eq!(list["name"], NET);
    list["plugins"][0]["agentSocket"] = json!(agent.api);
    list["plugins"][0]["ipam"]["dataDir"] = json!(dir.0.join("ipam"));
    let net_d = dir.0.join("net.d");
    std::fs::create_dir_all(&net_d).unwrap();
    std::fs::write(net_d.join("10-knic.conflist"), list.to_string()).unwrap();
    let podman = Podman::new(&ns, &dir.0, &net_d, &plugins);
    let rootfs = busybox_rootfs(&dir.0);

    // The peer serves a file of pseudo-random bytes over HTTP (busybox httpd).
    let www = dir.0.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let blob = guest_tests::pseudo_random(1 << 20, 0x6b6e_6963_2d70_6f64);
    std::fs::write(www.join("blob"), &blob).unwrap();
    let _httpd = guest_tests::Proc::spawn(
        "busybox httpd",
        topo.peer_ns
            .cmd("busybox")
            .args(["httpd", "-f", "-p", "8080", "-h"])
            .arg(&www),
    );

    // Detached, so the attachment can be looked at while the container lives. The
    // limits: podman's defaults raise RLIMIT_NOFILE/NPROC, which a runner without
    // CAP_SYS_RESOURCE may not.
    let root = rootfs.display().to_string();
    let id = podman
        .run(&[
            "run",
            "--detach",
            "--name",
            "knic-pod",
            "--network",
            NET,
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=4096:4096",
            "--rootfs",
            &root,
            "/bin/sleep",
            "600",
        ])
        .trim()
        .to_owned();
    assert!(!id.is_empty());
    let addr = podman.run(&["exec", "knic-pod", "ip", "-4", "-o", "addr", "show", "eth0"]);
    let pod_ip = addr
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no IPv4 address on the container's eth0: {addr}"))
        .to_owned();
    assert!(pod_ip.starts_with("10.210.50."), "{addr}");
    let ports: Vec<String> = names(&agent, "port")
        .into_iter()
        .filter(|n| n.starts_with("cni-"))
        .collect();
    assert_eq!(
        ports.len(),
        1,
        "one agent TAP port for the container: {ports:?}"
    );
    assert!(agent.ctl(&["route", "list"]).to_string().contains(&pod_ip));
    assert_eq!(leases(&dir.0).len(), 1, "host-local leased one address");

    // Through the library kernel to the peer and back.
    let ping = podman
        .cmd(&["exec", "knic-pod", "ping", "-c", "3", "-W", "5", PEER_IP])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&ping.stdout);
    assert!(
        ping.status.success() && text.contains("3 packets received"),
        "container -> peer: {text}{}\n{}",
        String::from_utf8_lossy(&ping.stderr),
        agent.log_text()
    );
    let url = format!("http://{PEER_IP}:8080/blob");
    let got = podman.run(&[
        "exec",
        "knic-pod",
        "sh",
        "-c",
        &format!("wget -q -O - {url} | sha256sum"),
    ]);
    let want = guest_tests::sha256(&www.join("blob"));
    assert_eq!(
        got.split_whitespace().next(),
        Some(want.as_str()),
        "the file arrived intact"
    );
    topo.peer_ping(&pod_ip, 2);

    // Removing the container detaches it (podman runs the list's DEL): nothing is left.
    podman.run(&["rm", "--force", "--time", "0", "knic-pod"]);
    assert!(podman.run(&["ps", "--all", "--quiet"]).trim().is_empty());
    assert!(
        !names(&agent, "port").iter().any(|n| n.starts_with("cni-")),
        "the agent's TAP port went"
    );
    assert_eq!(agent.library_links(), links_before);
    assert!(!agent.ctl(&["route", "list"]).to_string().contains(&pod_ip));
    assert!(
        !host_links(&ns).iter().any(|l| l.starts_with("kc")),
        "no TAP left in the agent's namespace: {:?}",
        host_links(&ns)
    );
    assert!(leases(&dir.0).is_empty(), "host-local's lease released");
    assert_eq!(
        netns_names(),
        netns_before,
        "the container's network namespace went"
    );
}

/// `kind: "netdev"` as a DPU uses it: the runtime's interface (here one end of a veth, as an
/// emulated virtio-net function would be) moves into the pod, its other end (the
/// "representor") becomes the agent's AF_PACKET uplink. The pod pings the peer through the
/// library kernel and back; CHECK passes; DEL gives the device back to the runtime's
/// namespace under its own name, down and without addresses, and removes the agent side.
#[test]
fn netdev_pod_reaches_the_peer_through_its_representor_and_del_gives_the_device_back() {
    let _one = serial();
    let (topo, dir, agent) = setup();
    let ns = topo.agent_ns.name.clone();
    let pod = Pod::new("nd");
    let links_before = agent.library_links();
    run(topo
        .agent_ns
        .cmd("ip")
        .args(["link", "add", "vf0", "type", "veth", "peer", "name", "rep0"]));
    run(topo.agent_ns.cmd("ip").args(["link", "set", "rep0", "up"]));
    let net = Net {
        ns: ns.clone(),
        knic: knic_conf(
            &agent.api,
            &dir.0,
            json!({ "kind": "netdev", "device": "vf0", "representor": "rep0" }),
        ),
        chained: vec![],
    };
    let netns = pod.path();
    let env = [
        ("CNI_CONTAINERID", "nd1"),
        ("CNI_NETNS", netns.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    // A device the runtime's namespace does not have: 7, and nothing is taken.
    let mut missing = net.knic.clone();
    missing["device"] = json!("nosuch0");
    missing["name"] = json!(NET);
    missing["cniVersion"] = json!("1.1.0");
    let (ok, v) = exec(
        &ns,
        &workspace_bin("knic-cni"),
        &with(&env, "ADD"),
        &missing,
    );
    assert!(
        !ok && v["code"] == 7 && v["msg"].as_str().unwrap().contains("nosuch0"),
        "{v}"
    );
    assert!(
        leases(&dir.0).is_empty()
            && !names(&agent, "uplink")
                .iter()
                .any(|n| n.starts_with("cni-"))
    );

    let result = net.add(&env);
    assert_eq!(result["interfaces"][0]["name"], "eth0", "{result}");
    assert_eq!(result["interfaces"][0]["sandbox"], netns.as_str());
    let addr = result["ips"][0]["address"].as_str().unwrap().to_owned();
    let pod_ip = addr.split('/').next().unwrap().to_owned();
    assert_eq!(pod.links(), ["lo", "eth0"]);
    assert!(
        !host_links(&ns).contains(&"vf0".to_owned()),
        "vf0 left the runtime's namespace"
    );
    let uplink = names(&agent, "uplink")
        .into_iter()
        .find(|n| n.starts_with("cni-"))
        .expect("the representor is an agent uplink");
    assert_eq!(
        agent
            .ctl(&["uplink", "list"])
            .to_string()
            .matches("packet:rep0")
            .count(),
        1
    );

    pod.ping_peer(&agent, "6b6e69632d6e6476", 1200);
    topo.peer_ping(&pod_ip, 2);
    net.each(&env, "CHECK", &result);

    net.each(&env, "DEL", &result);
    assert_eq!(pod.links(), ["lo"]);
    assert!(!names(&agent, "uplink").contains(&uplink));
    assert_eq!(agent.library_links(), links_before);
    assert!(!agent.ctl(&["route", "list"]).to_string().contains(&pod_ip));
    assert!(leases(&dir.0).is_empty(), "host-local's lease released");
    let vf = run(topo
        .agent_ns
        .cmd("ip")
        .args(["-j", "addr", "show", "dev", "vf0"]));
    let vf: Value = serde_json::from_slice(&vf.stdout).unwrap();
    assert!(
        vf[0]["addr_info"].as_array().unwrap().is_empty()
            && !vf[0]["flags"].as_array().unwrap().contains(&json!("UP")),
        "vf0 came back down and bare: {vf}"
    );
    // DEL again, and with the pod gone, succeed; the device stays where it is.
    net.each(&env, "DEL", &result);
    drop(pod);
    net.each(&env, "DEL", &result);
    assert!(host_links(&ns).contains(&"vf0".to_owned()));
}
