//! Kernel offload end to end: unmodified programs under `knic-offload` against a
//! `knic-agent`, in a network namespace whose loopback is **down** — so a socket that reached
//! the host's stack instead of the library kernel cannot connect anywhere, and the agent's
//! counters (its own and the library kernel's /proc/net) show where the bytes went.
//!
//! Needs root (namespaces), gcc, curl, python3 and iperf3 (deploy/dev/setup-debian.sh), and
//! the launcher and shim built next to the agent (`cargo test --workspace` builds them; alone:
//! `cargo build --release -p knic-offload -p knic-offload-shim`).
#![allow(clippy::unwrap_used)] // test helpers: a failure fails the test

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use test_support::offload::OffloadAgent;
use test_support::{Proc, require_root, require_tool, run, wait_for};

const AGENT: &str = env!("CARGO_BIN_EXE_knic-agent");

fn built(name: &str) -> PathBuf {
    let p = Path::new(AGENT).parent().unwrap().join(name);
    assert!(
        p.is_file(),
        "{} is missing: build it with `cargo build {}-p knic-offload -p knic-offload-shim` \
         (cargo test --workspace builds it)",
        p.display(),
        if cfg!(debug_assertions) {
            ""
        } else {
            "--release "
        }
    );
    p
}

/// The agent in a namespace with its loopback down (test-support's `OffloadAgent`), with a
/// vhost-user port as well and the offload socket at its default place.
struct Env(OffloadAgent);

impl std::ops::Deref for Env {
    type Target = OffloadAgent;
    fn deref(&self) -> &OffloadAgent {
        &self.0
    }
}

impl std::ops::DerefMut for Env {
    fn deref_mut(&mut self) -> &mut OffloadAgent {
        &mut self.0
    }
}

impl Env {
    fn start(tag: &str) -> Env {
        Env::start_with(tag, &[])
    }

    /// With extra agent flags.
    fn start_with(tag: &str, flags: &'static [&'static str]) -> Env {
        require_root();
        let launcher = built("knic-offload");
        built("libknic_offload_shim.so");
        Env(OffloadAgent::start(
            tag,
            Path::new(AGENT),
            &launcher,
            |dir, cmd| {
                cmd.arg("--port")
                    .arg(format!("vm0={}", dir.join("vm0.sock").display()))
                    .args(flags);
            },
        ))
    }

    fn stats(&self) -> Value {
        serde_json::from_slice(&self.stats_json()).unwrap()
    }

    /// Waits until the agent holds no socket of a finished program.
    fn wait_no_sockets(&self) {
        wait_for(
            "every offloaded socket closed",
            Duration::from_secs(10),
            || self.stats()["sockets_live"] == 0,
        );
    }
}

/// A counter of the library kernel's /proc/net/snmp (`Tcp`, `OutSegs`).
fn snmp(stats: &Value, proto: &str, field: &str) -> u64 {
    let text = stats["kernel_snmp"].as_str().unwrap();
    let mut lines = text.lines().filter(|l| l.starts_with(&format!("{proto}:")));
    let names: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let values: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let i = names.iter().position(|n| *n == field).unwrap();
    values[i].parse().unwrap()
}

/// Bytes received by the library kernel's `lo` (from its /proc/net/dev).
fn library_lo_rx(stats: &Value) -> u64 {
    let text = stats["kernel_dev"].as_str().unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("lo:"))
        .unwrap();
    line.split(':')
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn c_cases_errno_partial_io_dup_fork_exec_readiness() {
    require_tool("gcc");
    let env = Env::start("cases");
    let exe = env.dir.0.join("cases");
    cases_pass(&env, "gcc", &exe, |c| c);
    // The same binary without the launcher reaches the host stack, whose loopback is down.
    let plain = env.ns.cmd(&exe).output().unwrap();
    assert!(
        !plain.status.success(),
        "the cases passed on the host stack with lo down?"
    );
}

/// The Arm shim: `cases.c` built for aarch64, run by user-mode QEMU (through binfmt_misc,
/// so its `exec` of itself is emulated too) with the aarch64 shim preloaded, against this
/// agent. The aarch64 syscall table has no poll, select, epoll_wait or dup2, and its
/// `struct epoll_event` is not packed: the shim's arm64 paths are what this runs.
/// `deploy/dev/arm.sh` runs it, with `KNIC_ARM_SHIM` naming the aarch64 shim it built.
#[test]
#[ignore = "run by deploy/dev/arm.sh (needs the aarch64 shim and qemu-aarch64 in binfmt_misc)"]
fn arm64_shim_c_cases_under_qemu_user() {
    require_tool("aarch64-linux-gnu-gcc");
    let shim = std::env::var_os("KNIC_ARM_SHIM").map(PathBuf::from);
    let shim = shim.filter(|p| p.is_file()).unwrap_or_else(|| {
        panic!("KNIC_ARM_SHIM must name the aarch64 libknic_offload_shim.so: run deploy/dev/arm.sh")
    });
    assert!(
        Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists(),
        "qemu-aarch64 is not registered in binfmt_misc: deploy/dev/arm.sh registers it"
    );
    let env = Env::start("arm64");
    let exe = env.dir.0.join("cases-arm64");
    cases_pass(&env, "aarch64-linux-gnu-gcc", &exe, |c| {
        c.env("KNIC_OFFLOAD_SHIM", &shim)
            .env("QEMU_LD_PREFIX", "/usr/aarch64-linux-gnu")
            .env("LD_LIBRARY_PATH", "/usr/aarch64-linux-gnu/lib")
    });
}

/// Builds `cases.c` with `cc` into `exe`, runs it under the launcher (`tune` adds to the
/// command) and checks that every case passed through the library kernel: sockets opened
/// and closed in the agent, no protocol error, TCP opens and UDP datagrams in the library's
/// counters, not a byte on the host's loopback.
fn cases_pass(env: &Env, cc: &str, exe: &Path, tune: impl FnOnce(&mut Command) -> &mut Command) {
    run(Command::new(cc)
        .args(["-Wall", "-O1", "-o"])
        .arg(exe)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/offload/cases.c"
        )));
    let before = env.stats();
    let out = tune(&mut env.offload(exe))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all passed"),
        "cases ({cc}) failed:\n{stdout}\n{}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(env.dir.0.join("agent.log")).unwrap_or_default()
    );
    env.wait_no_sockets();
    let after = env.stats();
    assert!(after["sockets_opened"].as_u64() > before["sockets_opened"].as_u64());
    assert_eq!(after["protocol_errors"], 0);
    assert!(snmp(&after, "Tcp", "ActiveOpens") > snmp(&before, "Tcp", "ActiveOpens"));
    assert!(snmp(&after, "Udp", "InDatagrams") >= snmp(&before, "Udp", "InDatagrams") + 3);
    env.assert_host_loopback_unused();
}

#[test]
fn curl_fetches_from_python_http_server_both_offloaded() {
    require_tool("curl");
    let python = PathBuf::from("/usr/bin/python3");
    assert!(
        python.is_file(),
        "/usr/bin/python3 is missing: run deploy/dev/setup-debian.sh"
    );
    let env = Env::start("http");
    let www = env.dir.0.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let blob: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(www.join("blob"), &blob).unwrap();
    let mut server = env.offload(&python);
    server
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "18080",
            "--directory",
        ])
        .arg(&www)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(env.dir.0.join("http.log")).unwrap());
    let mut server = Proc::spawn("python3 -m http.server", &mut server);
    let out = env.dir.0.join("out");
    let url = "http://127.0.0.1:18080/blob";
    wait_for("the offloaded http server", Duration::from_secs(20), || {
        server.assert_running();
        env.offload("curl")
            .args(["-sS", "--max-time", "5", "-o", "/dev/null", url])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    });
    let before = env.stats();
    run(env
        .offload("curl")
        .args(["-sS", "--max-time", "60", "-o"])
        .arg(&out)
        .arg(url));
    let got = std::fs::read(&out).unwrap();
    assert!(
        got == blob,
        "curl got {} bytes, not the {}-byte file",
        got.len(),
        blob.len()
    );
    let after = env.stats();
    let sent = after["bytes_sent"].as_u64().unwrap() - before["bytes_sent"].as_u64().unwrap();
    let received =
        after["bytes_received"].as_u64().unwrap() - before["bytes_received"].as_u64().unwrap();
    assert!(
        sent >= blob.len() as u64,
        "the agent carried {sent} bytes out of programs"
    );
    assert!(
        received >= blob.len() as u64,
        "the agent carried {received} bytes into programs"
    );
    assert!(library_lo_rx(&after) - library_lo_rx(&before) >= blob.len() as u64);
    env.assert_host_loopback_unused();
    // Without the launcher curl is on the host stack: nothing listens there.
    let plain = env
        .ns
        .cmd("curl")
        .args(["-sS", "--max-time", "5", url])
        .output()
        .unwrap();
    assert!(
        !plain.status.success(),
        "host curl reached the offloaded server?"
    );
    drop(server);
    env.wait_no_sockets();
}

fn iperf_bytes(json: &[u8], key: &str) -> u64 {
    let v: Value = serde_json::from_slice(json)
        .unwrap_or_else(|e| panic!("iperf3 JSON: {e}: {}", String::from_utf8_lossy(json)));
    v["end"][key]["bytes"].as_f64().unwrap_or(0.0) as u64
}

#[test]
fn iperf3_client_and_server_over_the_library_loopback() {
    require_tool("iperf3");
    let env = Env::start("iperf");
    let mut server = env.offload("iperf3");
    server
        .args(["-s", "-B", "127.0.0.1", "-p", "15201"])
        .stdout(std::fs::File::create(env.dir.0.join("iperf-server.log")).unwrap())
        .stderr(std::fs::File::create(env.dir.0.join("iperf-server.err")).unwrap());
    let mut server = Proc::spawn("iperf3 -s", &mut server);
    std::thread::sleep(Duration::from_millis(500));
    server.assert_running();
    for (what, extra, key) in [
        ("TCP", &[][..], "sum_received"),
        ("TCP reverse", &["-R"][..], "sum_received"),
        ("TCP sendfile", &["-Z"][..], "sum_received"),
        ("UDP", &["-u", "-b", "50M", "-l", "1400"][..], "sum"),
    ] {
        let before = env.stats();
        let out = run(env
            .offload("iperf3")
            .args(["-c", "127.0.0.1", "-p", "15201", "-t", "2", "-J"])
            .args(extra));
        let bytes = iperf_bytes(&out.stdout, key);
        let after = env.stats();
        let sent = after["bytes_sent"].as_u64().unwrap() - before["bytes_sent"].as_u64().unwrap();
        eprintln!("iperf3 {what}: {bytes} bytes in 2 s; the agent carried {sent}");
        assert!(bytes > 1 << 20, "iperf3 {what} moved only {bytes} bytes");
        assert!(
            sent >= bytes,
            "iperf3 {what}: {bytes} bytes but the agent carried {sent}"
        );
    }
    env.assert_host_loopback_unused();
    server.assert_running();
    let errors = std::fs::read_to_string(env.dir.0.join("iperf-server.err")).unwrap();
    assert!(errors.is_empty(), "iperf3 -s complained: {errors}");
    drop(server);
    env.wait_no_sockets();
}

#[test]
fn a_killed_program_leaves_nothing_and_an_agent_stop_gives_clean_errors() {
    require_tool("curl");
    let python = "/usr/bin/python3";
    let mut env = Env::start("restart");
    let www = env.dir.0.join("www");
    std::fs::create_dir_all(&www).unwrap();
    // Larger than what the library's socket buffers hold, so the kill is mid-transfer (data
    // already in the kernel's buffers is still delivered, as in Linux).
    std::fs::write(www.join("blob"), vec![7u8; 64 << 20]).unwrap();
    let mut server = env.offload(python);
    server
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "18081",
            "--directory",
        ])
        .arg(&www)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut server = Proc::spawn("python3 -m http.server", &mut server);
    let url = "http://127.0.0.1:18081/blob";
    wait_for("the offloaded http server", Duration::from_secs(20), || {
        server.assert_running();
        env.offload("curl")
            .args(["-sS", "--max-time", "5", "-o", "/dev/null", url])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    });
    // A slow download, then the server is killed mid-transfer: curl ends with an error (no
    // hang), and the agent holds none of their sockets afterwards.
    let mut curl = env.offload("curl");
    curl.args([
        "-sS",
        "--limit-rate",
        "2M",
        "--max-time",
        "60",
        "-o",
        "/dev/null",
        url,
    ])
    .stderr(Stdio::null());
    let mut curl = Proc::spawn("curl", &mut curl);
    std::thread::sleep(Duration::from_millis(700));
    assert!(server.stop("-KILL", Duration::from_secs(5)));
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = curl.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "curl hangs after its server died"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        !status.success(),
        "curl got the whole file from a killed server?"
    );
    env.wait_no_sockets();
    assert!(env.stats()["sockets_closed"].as_u64().unwrap() >= 3);

    // A program blocked in recv when the agent stops gets an error at once (ECONNRESET),
    // and a new socket() says ENETDOWN: no hang, no crash.
    let script = "import socket,sys,time\n\
        l=socket.socket(); l.bind(('127.0.0.1',18082)); l.listen()\n\
        c=socket.create_connection(('127.0.0.1',18082)); s,_=l.accept()\n\
        print('ready',flush=True)\n\
        try:\n  s.recv(10); print('eof')\n\
        except OSError as e: print('recv', e.errno)\n\
        try:\n  socket.socket(); print('socket ok')\n\
        except OSError as e: print('socket', e.errno)\n";
    let mut prog = env.offload(python);
    prog.args(["-c", script]).stdout(Stdio::piped());
    let mut prog = Proc::spawn("python3 client", &mut prog);
    let mut out = std::io::BufReader::new(prog.child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    assert!(
        env.agent.stop("-TERM", Duration::from_secs(20)),
        "the agent did not stop"
    );
    let start = std::time::Instant::now();
    while prog.child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the program hangs after the agent stopped"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(
        rest.trim(),
        format!(
            "recv {}\nsocket {}",
            libc_errno::ECONNRESET,
            libc_errno::ENETDOWN
        )
    );
}

/// The errno values the shim reports (Linux, every architecture).
mod libc_errno {
    pub const ECONNRESET: i32 = 104;
    pub const ENETDOWN: i32 = 100;
}

/// What the limits script prints, one line per step.
const LIMITS_SCRIPT: &str = r#"
import errno, socket
held = []
try:
    while len(held) < 100:
        held.append(socket.socket())
except OSError as e:
    print("sockets", len(held), errno.errorcode[e.errno])
for s in held:
    s.close()
lst = socket.socket()
lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lst.bind(("127.0.0.1", 18090))
lst.listen(8)
a = socket.create_connection(("127.0.0.1", 18090))
b = socket.create_connection(("127.0.0.1", 18090))
# listener, a, b: the fourth is the first accepted connection
c, _ = lst.accept()
try:
    lst.accept()
    print("accept over the limit succeeded")
except OSError as e:
    print("accept", errno.errorcode[e.errno])
c.close()
d, _ = lst.accept()
d.sendall(b"still queued")
print("after a close", b.recv(64).decode())
"#;

/// `--offload-max-sockets 4`: a program's fifth library socket fails with EMFILE (as one past
/// RLIMIT_NOFILE would), closing gives the slots back, an accept over the limit fails with
/// EMFILE and leaves the connection queued for the accept after a close; the refusals are
/// counted and nothing stays behind.
#[test]
fn a_program_past_its_socket_limit_gets_emfile_and_its_slots_back() {
    let python = "/usr/bin/python3";
    let env = Env::start_with("limits", &["--offload-max-sockets", "4"]);
    let before = env.stats();
    assert_eq!(before["max_sockets_per_process"], 4, "{before}");
    let out = run(env.offload(python).args(["-c", LIMITS_SCRIPT]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            "sockets 4 EMFILE",
            "accept EMFILE",
            "after a close still queued"
        ],
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = env.stats();
    assert_eq!(
        after["sockets_limited"].as_u64().unwrap() - before["sockets_limited"].as_u64().unwrap(),
        2,
        "{after}"
    );
    env.wait_no_sockets();
    env.assert_host_loopback_unused();
}

/// A client that connects to the offload socket and never says what it wants is closed
/// after the agent's first-message wait (5 s) and counted, so silent connections cannot
/// hold the agent's threads; a stop right after finds nothing left to wait for.
#[test]
fn a_silent_connection_is_closed_and_counted() {
    let mut env = Env::start("silent");
    let script = "import socket,sys,time\n\
        s=socket.socket(socket.AF_UNIX,socket.SOCK_SEQPACKET); s.connect(sys.argv[1])\n\
        s.settimeout(20)\n\
        t=time.monotonic(); d=s.recv(16)\n\
        print('closed' if d==b'' else 'data', round(time.monotonic()-t,1), flush=True)\n";
    let start = std::time::Instant::now();
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(&env.socket)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("closed"),
        "the silent client: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(30),
        "closed after {waited:?}, not after the first-message wait"
    );
    assert_eq!(env.stats()["silent_connections"], 1);
    assert_eq!(env.stats()["protocol_errors"], 0);
    assert!(
        env.agent.stop("-TERM", Duration::from_secs(20)),
        "the agent did not stop"
    );
}

/// The flags of `ip -j link show NAME`'s one interface.
fn link_flags(json: &[u8]) -> Vec<String> {
    let v: Value = serde_json::from_slice(json).unwrap();
    v[0]["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_owned())
        .collect()
}

/// An offloaded program with a TCP listener, an established connection holding unread data
/// and a UDP socket, all on an address only the library kernel has, that runs `ss` (which
/// inherits the launcher's environment, so it is offloaded too) and prints what it said.
const SS_SCRIPT: &str = "import socket,subprocess\n\
    l=socket.socket(); l.bind(('198.51.100.7',18084)); l.listen()\n\
    c=socket.create_connection(('198.51.100.7',18084)); a,_=l.accept()\n\
    u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); u.bind(('198.51.100.7',18085))\n\
    c.sendall(b'x'*5000)\n\
    print(subprocess.run(['ss','-tuanie'],capture_output=True,text=True,check=True).stdout)\n";

/// `ip`, `ss` and `nft` under the launcher speak netlink to the library kernel: they see its
/// interfaces (its loopback is up, the namespace's is down), change it (an address, a route,
/// an nftables table) where the host namespace sees none of it, get its errors as the
/// kernel words them, and `ss` lists the offloaded sockets with their TCP_INFO — not the
/// host's sockets (which it would show had sock_diag failed and it fallen back to /proc).
#[test]
fn ip_ss_and_nft_see_and_configure_the_library_kernel() {
    require_tool("nft");
    let env = Env::start("netlink");
    let lib_lo = link_flags(&run(env.offload("ip").args(["-j", "link", "show", "lo"])).stdout);
    let host_lo = link_flags(&run(env.ns.cmd("ip").args(["-j", "link", "show", "lo"])).stdout);
    assert!(lib_lo.iter().any(|f| f == "UP"), "library lo: {lib_lo:?}");
    assert!(!host_lo.iter().any(|f| f == "UP"), "host lo: {host_lo:?}");
    let names = |json: &[u8]| -> Vec<String> {
        let v: Value = serde_json::from_slice(json).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_owned())
            .collect()
    };
    let lib_links = names(&run(env.offload("ip").args(["-j", "link"])).stdout);
    let host_links = names(&run(env.ns.cmd("ip").args(["-j", "link"])).stdout);
    assert_eq!(host_links, ["lo"]);
    assert!(
        lib_links.len() == 2 && lib_links[0] == "lo",
        "the library's interfaces: lo and vm0's device, not {lib_links:?}"
    );

    // Changes land in the library kernel only; its errors come back worded by it.
    run(env
        .offload("ip")
        .args(["addr", "add", "198.51.100.7/32", "dev", "lo"]));
    run(env
        .offload("ip")
        .args(["route", "add", "blackhole", "203.0.113.0/24"]));
    let again = env
        .offload("ip")
        .args(["route", "add", "blackhole", "203.0.113.0/24"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && said.contains("File exists"),
        "a second identical route: {said}"
    );
    let lib_addrs = String::from_utf8(run(env.offload("ip").args(["-4", "addr"])).stdout).unwrap();
    let lib_routes = String::from_utf8(run(env.offload("ip").arg("route")).stdout).unwrap();
    let host_addrs = String::from_utf8(run(env.ns.cmd("ip").args(["-4", "addr"])).stdout).unwrap();
    let host_routes = String::from_utf8(run(env.ns.cmd("ip").arg("route")).stdout).unwrap();
    assert!(lib_addrs.contains("198.51.100.7/32"), "{lib_addrs}");
    assert!(
        lib_routes.contains("blackhole 203.0.113.0/24"),
        "{lib_routes}"
    );
    assert!(!host_addrs.contains("198.51.100.7"), "{host_addrs}");
    assert!(!host_routes.contains("203.0.113.0"), "{host_routes}");

    // ss: the offloaded sockets, with TCP_INFO; not a host listener.
    let mut host = env.ns.cmd("/usr/bin/python3");
    host.args([
        "-c",
        "import socket,time\nl=socket.socket(); l.bind(('0.0.0.0',18086)); l.listen()\n\
         time.sleep(120)\n",
    ]);
    let host_listener = Proc::spawn("a host listener", &mut host);
    wait_for("the host listener", Duration::from_secs(10), || {
        let out = run(env.ns.cmd("ss").args(["-tln"]));
        String::from_utf8_lossy(&out.stdout).contains(":18086")
    });
    let out = run(env.offload("/usr/bin/python3").args(["-c", SS_SCRIPT]));
    let ss = String::from_utf8(out.stdout).unwrap();
    let line = |state: &str, local: &str| {
        ss.lines()
            .any(|l| l.contains(state) && l.split_whitespace().nth(4) == Some(local))
    };
    assert!(line("LISTEN", "198.51.100.7:18084"), "{ss}");
    assert!(line("UNCONN", "198.51.100.7:18085"), "{ss}");
    let established = ss
        .lines()
        .filter(|l| l.contains("ESTAB") && l.contains("198.51.100.7:18084"))
        .count();
    assert_eq!(established, 2, "both ends of the connection: {ss}");
    assert!(
        ss.contains("cubic") && ss.contains("rtt:"),
        "TCP_INFO: {ss}"
    );
    assert!(!ss.contains("18086"), "ss listed a host socket: {ss}");
    drop(host_listener);

    // nftables: a table in the library kernel, none on the host.
    let table = "knic_netlink_test";
    run(env.offload("nft").args(["add", "table", "inet", table]));
    let lib_tables =
        String::from_utf8(run(env.offload("nft").args(["list", "tables"])).stdout).unwrap();
    let host_tables =
        String::from_utf8(run(env.ns.cmd("nft").args(["list", "tables"])).stdout).unwrap();
    assert!(
        lib_tables.contains(&format!("table inet {table}")),
        "{lib_tables}"
    );
    assert!(!host_tables.contains(table), "{host_tables}");
    run(env.offload("nft").args(["delete", "table", "inet", table]));
    let lib_tables =
        String::from_utf8(run(env.offload("nft").args(["list", "tables"])).stdout).unwrap();
    assert!(!lib_tables.contains(table), "{lib_tables}");

    env.assert_host_loopback_unused();
    env.wait_no_sockets();
}
