//! A minimal initramfs for QEMU guests: static busybox, the virtio-net modules of the host's
//! cloud kernel (decompressed with `xz`), and an `/init` script. Written as a newc cpio
//! archive directly, so no cpio tool is needed.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One archive entry.
enum Entry {
    Dir(&'static str),
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
                push_header(&mut out, ino, 0o020600, 0, (*major, *minor), name)
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

/// The host's cloud kernel and its module directory.
pub fn cloud_kernel() -> (PathBuf, PathBuf) {
    let mut kernels: Vec<PathBuf> = std::fs::read_dir("/boot")
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    kernels.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("vmlinuz-") && n.ends_with("-cloud-amd64"))
    });
    kernels.sort();
    let kernel = kernels.pop().unwrap_or_else(|| {
        panic!("no /boot/vmlinuz-*-cloud-amd64: run deploy/dev/setup-debian.sh (linux-image-cloud-amd64)")
    });
    let version = kernel
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .unwrap_or_default()
        .to_string();
    (kernel, PathBuf::from("/lib/modules").join(version))
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

/// Writes an initramfs whose `/init` runs `script` (busybox sh) after loading virtio-net.
pub fn build(dest: &Path, modules: &Path, script: &str) {
    let busybox = std::fs::read("/bin/busybox").unwrap_or_else(|e| {
        panic!("/bin/busybox ({e}): run deploy/dev/setup-debian.sh (busybox-static)")
    });
    let init = format!(
        "#!/bin/busybox sh\n/bin/busybox --install -s /bin\nexport PATH=/bin\n\
         mount -t proc proc /proc\nmount -t sysfs sys /sys\n\
         insmod /failover.ko\ninsmod /net_failover.ko\ninsmod /virtio_net.ko\n{script}\npoweroff -f\n"
    );
    let entries = [
        Entry::Dir("bin"),
        Entry::Dir("dev"),
        Entry::Dir("proc"),
        Entry::Dir("sys"),
        Entry::CharDev {
            name: "dev/console",
            major: 5,
            minor: 1,
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
    std::fs::write(dest, cpio(&entries)).unwrap_or_else(|e| panic!("{}: {e}", dest.display()));
}
