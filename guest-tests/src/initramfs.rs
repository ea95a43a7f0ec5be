//! A minimal initramfs for QEMU guests: static busybox, the virtio-net modules of the host's
//! cloud kernel (decompressed with `xz`), and an `/init` script. Written as a newc cpio
//! archive directly, so no cpio tool is needed. Dynamically linked host tools (Debian's
//! `iperf3`) can be added with the libraries `ldd` names for them, at the same paths.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One archive entry.
enum Entry {
    Dir(String),
    File {
        name: String,
        data: Vec<u8>,
        mode: u32,
    },
    CharDev {
        name: &'static str,
        major: u32,
        minor: u32,
    },
}

fn push_header(out: &mut Vec<u8>, ino: u32, mode: u32, size: usize, rdev: (u32, u32), name: &str) {
    let fields = [
        ino,
        mode,
        0,
        0,
        1,
        0,
        size as u32,
        0,
        0,
        rdev.0,
        rdev.1,
        (name.len() + 1) as u32,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

fn cpio(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let ino = i as u32 + 1;
        match e {
            Entry::Dir(name) => push_header(&mut out, ino, 0o040755, 0, (0, 0), name),
            Entry::CharDev { name, major, minor } => {
                push_header(&mut out, ino, 0o020666, 0, (*major, *minor), name)
            }
            Entry::File { name, data, mode } => {
                push_header(&mut out, ino, 0o100000 | mode, data.len(), (0, 0), name);
                out.extend_from_slice(data);
                while out.len() % 4 != 0 {
                    out.push(0);
                }
            }
        }
    }
    push_header(&mut out, 0, 0, 0, (0, 0), "TRAILER!!!");
    out
}

/// Where `deploy/dev/setup-debian.sh` unpacks the test guests' kernel package (never into
/// the host's /boot): `KNIC_GUEST_KERNEL_DIR`, else `~/.cache/knic/guest-kernel`.
pub fn guest_kernel_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KNIC_GUEST_KERNEL_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/root/.cache"));
    cache.join("knic/guest-kernel")
}

/// Debian's cloud kernel for the test guests and its module directory, from the unpacked
/// package in [`guest_kernel_dir`].
pub fn cloud_kernel() -> (PathBuf, PathBuf) {
    let root = guest_kernel_dir();
    let boot = root.join("boot");
    let mut kernels: Vec<PathBuf> = std::fs::read_dir(&boot)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    kernels.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("vmlinuz-") && n.ends_with("-cloud-amd64"))
    });
    kernels.sort();
    let kernel = kernels.pop().unwrap_or_else(|| {
        panic!(
            "no {}/vmlinuz-*-cloud-amd64: run deploy/dev/setup-debian.sh (it unpacks the guests' kernel there)",
            boot.display()
        )
    });
    let version = kernel
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .unwrap_or_default()
        .to_string();
    (kernel, root.join("lib/modules").join(version))
}

fn module(modules: &Path, rel: &str) -> Vec<u8> {
    let xz = modules.join(format!("{rel}.ko.xz"));
    if xz.is_file() {
        let out = Command::new("xz")
            .arg("-dc")
            .arg(&xz)
            .output()
            .unwrap_or_else(|e| panic!("xz is missing ({e}): run deploy/dev/setup-debian.sh"));
        assert!(out.status.success(), "xz -dc {}", xz.display());
        return out.stdout;
    }
    let plain = modules.join(format!("{rel}.ko"));
    std::fs::read(&plain).unwrap_or_else(|e| panic!("{}: {e}", plain.display()))
}

/// Lines of a guest's `/init` that bring `eth0` up and configure it from a DHCP server with
/// busybox `udhcpc`, as a stock distribution's client script does: the offered MTU
/// (option 26), the address, the default route. Each lease prints `KNIC_LEASE ip=..
/// mask=.. router=.. mtu=.. lease=..`; then `KNIC_DHCP_OK`, or `KNIC_DHCP_FAIL` with no
/// lease after 20 tries.
pub fn dhcp_client() -> String {
    let script = r#"#!/bin/sh
case "$1" in
bound|renew)
  [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
  ip addr add "$ip/$mask" dev "$interface" 2>/dev/null
  ip route add default via "$router" dev "$interface" 2>/dev/null
  echo "KNIC_LEASE ip=$ip mask=$mask router=$router mtu=$mtu lease=$lease"
  ;;
esac
"#;
    format!(
        r#"printf '%s' '{script}' > /bin/dhcp.sh; chmod +x /bin/dhcp.sh
ip link set eth0 up
if udhcpc -i eth0 -f -q -n -t 20 -T 3 -s /bin/dhcp.sh; then echo KNIC_DHCP_OK; else echo KNIC_DHCP_FAIL; fi
"#
    )
}

/// A line of a guest's `/init` that waits (two minutes at most) until `eth0` has a SLAAC
/// address in `prefix` (its first four groups' text, e.g. `fd00:210:1`) and a default
/// route from a router advertisement.
pub fn wait_for_slaac(prefix: &str) -> String {
    format!(
        "i=0; until ip -f inet6 addr show dev eth0 | grep -q 'inet6 {prefix}:' && ip -f inet6 route | grep -q '^default via fe80' || [ $i -ge 120 ]; do sleep 1; i=$((i+1)); done\n"
    )
}

/// Writes an initramfs whose `/init` runs `script` (busybox sh) after loading virtio-net.
pub fn build(dest: &Path, modules: &Path, script: &str) {
    build_with_tools(dest, modules, script, &[]);
}

/// Host files a dynamically linked `tool` needs: itself and what `ldd` resolves (the
/// loader included), each as an absolute path.
fn with_libraries(tool: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd")
        .arg(tool)
        .output()
        .unwrap_or_else(|e| panic!("ldd is missing ({e}): run deploy/dev/setup-debian.sh"));
    assert!(out.status.success(), "ldd {}", tool.display());
    let mut files = vec![tool.to_path_buf()];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = line.rsplit("=> ").next().unwrap_or(line).trim();
        let path = path.split(" (").next().unwrap_or(path);
        if path.starts_with('/') {
            files.push(PathBuf::from(path));
        }
    }
    files
}

/// Like [`build`], and also puts each of `tools` in `/bin` with its shared libraries at their
/// host paths, plus a writable `/tmp` (iperf3 keeps its send buffer in a temporary file).
pub fn build_with_tools(dest: &Path, modules: &Path, script: &str, tools: &[&Path]) {
    let busybox = std::fs::read("/bin/busybox").unwrap_or_else(|e| {
        panic!("/bin/busybox ({e}): run deploy/dev/setup-debian.sh (busybox-static)")
    });
    let init = format!(
        "#!/bin/busybox sh\n/bin/busybox --install -s /bin\nexport PATH=/bin\n\
         mount -t proc proc /proc\nmount -t sysfs sys /sys\n\
         insmod /failover.ko\ninsmod /net_failover.ko\ninsmod /virtio_net.ko\n{script}\npoweroff -f\n"
    );
    let mut entries = vec![
        Entry::Dir("bin".into()),
        Entry::Dir("dev".into()),
        Entry::Dir("proc".into()),
        Entry::Dir("sys".into()),
        Entry::Dir("tmp".into()),
        Entry::CharDev {
            name: "dev/console",
            major: 5,
            minor: 1,
        },
        Entry::CharDev {
            name: "dev/null",
            major: 1,
            minor: 3,
        },
        // iperf3 seeds its cookie from /dev/urandom.
        Entry::CharDev {
            name: "dev/urandom",
            major: 1,
            minor: 9,
        },
        Entry::File {
            name: "bin/busybox".into(),
            data: busybox,
            mode: 0o755,
        },
        Entry::File {
            name: "init".into(),
            data: init.into_bytes(),
            mode: 0o755,
        },
        Entry::File {
            name: "failover.ko".into(),
            data: module(modules, "kernel/net/core/failover"),
            mode: 0o644,
        },
        Entry::File {
            name: "net_failover.ko".into(),
            data: module(modules, "kernel/drivers/net/net_failover"),
            mode: 0o644,
        },
        Entry::File {
            name: "virtio_net.ko".into(),
            data: module(modules, "kernel/drivers/net/virtio_net"),
            mode: 0o644,
        },
    ];
    let mut dirs = std::collections::BTreeSet::new();
    for tool in tools {
        for (i, host) in with_libraries(tool).into_iter().enumerate() {
            let data = std::fs::read(&host).unwrap_or_else(|e| panic!("{}: {e}", host.display()));
            let name = if i == 0 {
                let base = host
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                format!("bin/{base}")
            } else {
                let rel = host.to_string_lossy().trim_start_matches('/').to_string();
                // Parents first: cpio extraction does not create missing directories.
                let mut parent = Path::new(&rel).parent();
                while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
                    dirs.insert(p.to_string_lossy().into_owned());
                    parent = p.parent();
                }
                rel
            };
            entries.push(Entry::File {
                name,
                data,
                mode: 0o755,
            });
        }
    }
    // BTreeSet order puts every parent before its children.
    let dir_entries = dirs.into_iter().map(Entry::Dir);
    let entries: Vec<Entry> = dir_entries.chain(entries).collect();
    std::fs::write(dest, cpio(&entries)).unwrap_or_else(|e| panic!("{}: {e}", dest.display()));
}
