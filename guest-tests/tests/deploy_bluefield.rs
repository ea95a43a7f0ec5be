//! `deploy/bluefield/knic-bluefield.sh` against a simulated DPU: the same script, with
//! `mlxconfig` and `virtnet` replaced by the recording fakes in `deploy/bluefield/sim/`,
//! network namespaces and veth pairs standing in for the representors, and a real knic-agent
//! taking the registered uplinks. Asserts the commands issued, that dry-run changes nothing,
//! that a second run changes nothing, and the agent's resulting state through knicctl.

// The helpers below are test code too (clippy.toml lets #[test] fns unwrap; this extends
// that to their helpers): a failed unwrap fails the test.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use guest_tests::agent::KnicAgent;
use guest_tests::{NetNs, Scratch, require_root, require_tool, run, serial, workspace_bin};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn script() -> PathBuf {
    repo().join("deploy/bluefield/knic-bluefield.sh")
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn scripts_are_shellcheck_clean() {
    let shellcheck = require_tool("shellcheck");
    let out = run(Command::new(shellcheck)
        .arg(script())
        .arg(repo().join("deploy/bluefield/sim/mlxconfig"))
        .arg(repo().join("deploy/bluefield/sim/virtnet")));
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn help_names_every_step() {
    let out = Command::new(script()).arg("--help").output().expect("run");
    assert!(out.status.success(), "{}", text(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    for step in ["build", "bfcfg", "dpu", "--dry-run"] {
        assert!(help.contains(step), "--help lacks {step}:\n{help}");
    }
    let bad = Command::new(script())
        .arg("frobnicate")
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
}

/// A directory of fakes put first on PATH for the build step: `rustup` lists `targets`,
/// `cargo` records that it ran, an `aarch64-linux-gnu-gcc` exists when `cross_cc`.
fn build_fakes(dir: &Path, targets: &str, cross_cc: bool) -> PathBuf {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let write = |name: &str, body: String| {
        let p = bin.join(name);
        fs::write(&p, body).unwrap();
        run(Command::new("chmod").arg("+x").arg(&p));
    };
    write("rustup", format!("#!/bin/sh\nprintf '{targets}\\n'\n"));
    write(
        "cargo",
        format!(
            "#!/bin/sh\necho \"cargo $*\" >>{}\n",
            dir.join("cargo.calls").display()
        ),
    );
    if cross_cc {
        write("aarch64-linux-gnu-gcc", "#!/bin/sh\nexit 0\n".into());
    }
    bin
}

/// A directory of links to the system tools the script uses, and nothing else: a PATH
/// without the cross compiler even where the machine has one (the Arm build installs it).
fn tools_but_cross_gcc(dir: &Path) -> PathBuf {
    let sys = dir.join("sys");
    fs::create_dir_all(&sys).unwrap();
    for tool in [
        "bash", "env", "grep", "sed", "dirname", "basename", "cat", "readlink",
    ] {
        let found = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} is missing"));
        std::os::unix::fs::symlink(found, sys.join(tool)).unwrap();
    }
    sys
}

fn path_with(bin: &Path) -> String {
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// `knic-bluefield.sh --dry-run build` with `path` as PATH.
fn dry_build(path: &str) -> Output {
    Command::new(script())
        .args(["--dry-run", "build"])
        .env("PATH", path)
        .output()
        .unwrap()
}

#[test]
fn build_step_says_what_is_missing_and_dry_run_builds_nothing() {
    let dir = Scratch::new("deploy-build");
    // No aarch64 Rust target: a clear error naming the fix, no build.
    let bin = build_fakes(&dir.0, "x86_64-unknown-linux-gnu", true);
    let out = dry_build(&path_with(&bin));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("rustup target add aarch64-unknown-linux-gnu"),
        "{}",
        text(&out)
    );
    // Target present, cross gcc missing: names the Debian package.
    let dir2 = Scratch::new("deploy-build2");
    let bin = build_fakes(&dir2.0, "aarch64-unknown-linux-gnu", false);
    let path = format!(
        "{}:{}",
        bin.display(),
        tools_but_cross_gcc(&dir2.0).display()
    );
    let out = dry_build(&path);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("gcc-aarch64-linux-gnu"),
        "{}",
        text(&out)
    );
    // Everything present: dry-run prints the build and does not run cargo.
    let dir3 = Scratch::new("deploy-build3");
    let bin = build_fakes(&dir3.0, "aarch64-unknown-linux-gnu", true);
    let out = dry_build(&path_with(&bin));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("would: cargo build --release --target aarch64-unknown-linux-gnu"),
        "{}",
        text(&out)
    );
    assert!(!dir3.0.join("cargo.calls").exists(), "dry-run ran cargo");
}

#[test]
fn bfcfg_installs_agent_units_and_config_and_is_idempotent() {
    let dir = Scratch::new("deploy-bfcfg");
    let bins = dir.0.join("bins");
    fs::create_dir_all(&bins).unwrap();
    for b in ["knic-agent", "knicctl"] {
        fs::copy(workspace_bin(b), bins.join(b)).unwrap();
    }
    let cfg = dir.0.join("bf.cfg");
    let gen_cfg = |dry: bool| {
        let mut c = Command::new(script());
        if dry {
            c.arg("--dry-run");
        }
        c.arg("bfcfg")
            .arg("--bin-dir")
            .arg(&bins)
            .arg("--out")
            .arg(&cfg)
            .args(["--agent-args", "--uplink up0=packet:p0"]);
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        text(&out)
    };
    let dry = gen_cfg(true);
    assert!(dry.contains("would: write"), "{dry}");
    assert!(!cfg.exists(), "dry-run wrote bf.cfg");
    gen_cfg(false);
    let first = fs::read(&cfg).unwrap();
    let again = gen_cfg(false);
    assert!(again.contains("up to date"), "{again}");
    assert_eq!(
        fs::read(&cfg).unwrap(),
        first,
        "a second run changed bf.cfg"
    );

    // Run the hook as the BFB installer would, into a scratch root.
    let root = dir.0.join("root");
    fs::create_dir_all(&root).unwrap();
    let out = run(Command::new("bash")
        .arg("-c")
        .arg(format!(". {} && bfb_modify_os", cfg.display()))
        .env("KNIC_BFB_ROOT", &root));
    assert!(out.status.success(), "{}", text(&out));
    for f in [
        "usr/bin/knic-agent",
        "usr/bin/knicctl",
        "usr/lib/systemd/system/knic-agent.service",
        "usr/lib/sysusers.d/knic.conf",
        "usr/sbin/knic-bluefield",
    ] {
        assert!(root.join(f).is_file(), "hook did not install {f}");
    }
    assert_eq!(
        fs::read(root.join("usr/bin/knic-agent")).unwrap(),
        fs::read(workspace_bin("knic-agent")).unwrap()
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/default/knic-agent")).unwrap(),
        "KNIC_AGENT_ARGS=\"--uplink up0=packet:p0\"\n"
    );
    let link =
        fs::read_link(root.join("etc/systemd/system/multi-user.target.wants/knic-agent.service"))
            .unwrap();
    assert_eq!(
        link,
        Path::new("/usr/lib/systemd/system/knic-agent.service")
    );
}

/// Dropped in field order: the agent stops before its namespaces go.
struct Dpu {
    agent: KnicAgent,
    dir: Scratch,
    agent_ns: NetNs,
    peer_ns: NetNs,
}

impl Dpu {
    fn new() -> Dpu {
        let dir = Scratch::new("deploy-dpu");
        let agent_ns = NetNs::new("dpl-a");
        let peer_ns = NetNs::new("dpl-p");
        // p0: the physical uplink's representor; its far end is "the wire".
        run(agent_ns.cmd("ip").args([
            "link",
            "add",
            "p0",
            "type",
            "veth",
            "peer",
            "name",
            "wire0",
            "netns",
            &peer_ns.name,
        ]));
        fs::write(dir.0.join("nr_hugepages"), "0\n").unwrap();
        let args = vec![
            "--port".to_string(),
            format!("vm1={}", dir.0.join("vm1.sock").display()),
        ];
        let agent = KnicAgent::start(&agent_ns, &dir.0, &args);
        Dpu {
            agent,
            dir,
            agent_ns,
            peer_ns,
        }
    }

    fn calls(&self) -> String {
        fs::read_to_string(self.dir.0.join("calls")).unwrap_or_default()
    }

    fn hugepages(&self) -> String {
        fs::read_to_string(self.dir.0.join("nr_hugepages"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// The script's dpu step in the agent's namespace with the fakes on PATH.
    fn provision(&self, dry_run: bool, mlx: &[(&str, &str)]) -> Output {
        let sim = repo().join("deploy/bluefield/sim");
        let ctl = workspace_bin("knicctl");
        let ctl_dir = ctl.parent().unwrap();
        let mut c = self.agent_ns.cmd(script());
        if dry_run {
            c.arg("--dry-run");
        }
        c.args([
            "dpu",
            "--functions",
            "2",
            "--uplinks",
            "p0",
            "--hugepages",
            "1024",
        ])
        .arg("--api-socket")
        .arg(&self.agent.api)
        .env(
            "PATH",
            format!(
                "{}:{}:{}",
                sim.display(),
                ctl_dir.display(),
                std::env::var("PATH").unwrap()
            ),
        )
        .env("SIM_CALLS", self.dir.0.join("calls"))
        .env("SIM_STATE", self.dir.0.join("virtnet.json"))
        .env("SIM_PEER_NS", &self.peer_ns.name)
        .env("KNIC_BF_HUGEPAGES_FILE", self.dir.0.join("nr_hugepages"));
        for (k, v) in mlx {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    /// The agent's uplinks: (name, interface) pairs.
    fn uplinks(&self) -> Vec<Value> {
        match self.agent.ctl(&["uplink", "list"]) {
            Value::Array(a) => a,
            other => panic!("uplink list: {other}"),
        }
    }
}

#[test]
fn dpu_step_on_a_simulated_dpu() {
    require_root();
    require_tool("jq");
    let _serial = serial();
    let dpu = Dpu::new();

    // Dry run: says what it would do, changes nothing.
    let out = dpu.provision(true, &[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    for want in [
        "would: set 2 MiB hugepages 0 -> 1024",
        "would: hot-plug emulated virtio-net function 0",
        "would: hot-plug emulated virtio-net function 1",
        "would: register p0 as agent uplink up0",
    ] {
        assert!(t.contains(want), "dry run lacks {want:?}:\n{t}");
    }
    assert!(
        !dpu.calls().contains("hotplug"),
        "dry run hot-plugged:\n{}",
        dpu.calls()
    );
    assert_eq!(dpu.hugepages(), "0");
    assert!(dpu.uplinks().is_empty(), "dry run registered uplinks");

    // The real run: the commands issued, and the agent's state.
    let out = dpu.provision(false, &[]);
    assert!(
        out.status.success(),
        "{}\nagent:\n{}",
        text(&out),
        dpu.agent.log_text()
    );
    let calls = dpu.calls();
    for want in [
        "mlxconfig -d /dev/mst/mt41692_pciconf0 q INTERNAL_CPU_MODEL",
        "mlxconfig -d /dev/mst/mt41692_pciconf0 q VIRTIO_NET_EMULATION_ENABLE",
        "mlxconfig -d /dev/mst/mt41692_pciconf0 q VIRTIO_NET_EMULATION_NUM_PF",
        "virtnet hotplug -i mlx5_0 -f 0x0 -m 02:4b:4e:00:00:00 -t 1500 -n 3 -s 1024",
        "virtnet hotplug -i mlx5_0 -f 0x0 -m 02:4b:4e:00:00:01 -t 1500 -n 3 -s 1024",
    ] {
        assert!(calls.contains(want), "no {want:?} in:\n{calls}");
    }
    assert!(
        !calls.contains(" s "),
        "the script set firmware values:\n{calls}"
    );
    assert_eq!(calls.matches("virtnet hotplug").count(), 2, "{calls}");
    assert_eq!(dpu.hugepages(), "1024");
    let state = |u: &[Value]| -> Vec<String> {
        let mut v: Vec<String> = u.iter().map(|x| x.to_string()).collect();
        v.sort();
        v
    };
    let uplinks = dpu.uplinks();
    let names: Vec<&str> = uplinks.iter().filter_map(|u| u["name"].as_str()).collect();
    assert_eq!(names.len(), 3, "{uplinks:?}");
    for (name, ifname) in [
        ("fn0", "en3f0pf0sf1001"),
        ("fn1", "en3f0pf0sf1002"),
        ("up0", "p0"),
    ] {
        let u = uplinks
            .iter()
            .find(|u| u["name"] == name)
            .unwrap_or_else(|| panic!("no uplink {name}: {uplinks:?}"));
        assert!(
            u.to_string().contains(ifname),
            "uplink {name} is not on {ifname}: {u}"
        );
    }
    let after_first = state(&uplinks);

    // Second run: nothing changes.
    let calls_before = dpu.calls().len();
    let out = dpu.provision(false, &[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        !t.contains("hot-plug") && !t.contains("as agent uplink") && !t.contains("set "),
        "second run changed something:\n{t}"
    );
    assert!(
        !dpu.calls()[calls_before..].contains("hotplug"),
        "{}",
        dpu.calls()
    );
    assert_eq!(dpu.hugepages(), "1024");
    assert_eq!(state(&dpu.uplinks()), after_first);

    // A DPU in NIC mode: refused with the fix, nothing else done.
    let calls_before = dpu.calls().len();
    let out = dpu.provision(false, &[("SIM_MLX_CPU_MODEL", "SEPARATED_HOST(0)")]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("not in DPU mode") && t.contains("INTERNAL_CPU_MODEL=1"),
        "{t}"
    );
    let out = dpu.provision(false, &[("SIM_MLX_VIRTIO", "False(0)")]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("VIRTIO_NET_EMULATION_ENABLE=1"), "{t}");
    assert!(
        !dpu.calls()[calls_before..].contains("virtnet"),
        "{}",
        dpu.calls()
    );
}
