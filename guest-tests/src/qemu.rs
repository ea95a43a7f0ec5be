//! The one way the tests start a QEMU guest: Debian's cloud kernel under TCG, a busybox
//! initramfs, one virtio-net on a vhost-user socket, the serial console in a file.
//!
//! TCG because KVM may exist but be unusable (nested virtualisation stops with an internal
//! error). vhost-user needs the guest's RAM shareable: a memfd backend on a NUMA node.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{Proc, initramfs, require_tool, wait_for};

/// Guest RAM; the TCG guest's busybox world needs little, 64 MiB transfers fit in tmpfs.
const MEMORY_MIB: u32 = 256;

/// A QEMU guest to start: `QemuGuest::new(initrd, socket, console).queues(2).spawn()`.
#[derive(Debug, Clone)]
pub struct QemuGuest {
    initrd: PathBuf,
    socket: PathBuf,
    console: PathBuf,
    queues: u16,
    mac: String,
    tso: bool,
    reconnect: bool,
}

impl QemuGuest {
    /// A guest booting `initrd`, its virtio-net on the vhost-user `socket` (QEMU dials it),
    /// the console written to `console`.
    pub fn new(initrd: &Path, socket: &Path, console: &Path) -> Self {
        Self {
            initrd: initrd.to_owned(),
            socket: socket.to_owned(),
            console: console.to_owned(),
            queues: 1,
            mac: "52:54:00:12:34:56".into(),
            tso: true,
            reconnect: false,
        }
    }

    /// `queues` queue pairs and as many vCPUs (Linux's virtio_net uses min(pairs, CPUs)).
    pub fn queues(mut self, queues: u16) -> Self {
        self.queues = queues;
        self
    }

    pub fn mac(mut self, mac: &str) -> Self {
        self.mac = mac.to_owned();
        self
    }

    /// `false` masks the host TSO features from the guest (QEMU's own properties), so the
    /// guest sends MTU-sized frames.
    pub fn tso(mut self, tso: bool) -> Self {
        self.tso = tso;
        self
    }

    /// Redial a lost backend every second (`reconnect-ms`): the guest keeps running across
    /// a backend restart or a port's removal and sees its link go down and up.
    pub fn reconnect(mut self, reconnect: bool) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// The QEMU command line.
    pub fn command(&self) -> Command {
        let (kernel, _) = initramfs::cloud_kernel();
        let mut chardev = format!("socket,id=c0,path={}", self.socket.display());
        if self.reconnect {
            chardev.push_str(",reconnect-ms=1000");
        }
        let mut device = format!(
            "virtio-net-pci,netdev=n0,mac={},mq={},vectors={}",
            self.mac,
            if self.queues > 1 { "on" } else { "off" },
            2 * self.queues + 2
        );
        if !self.tso {
            device.push_str(",host_tso4=off,host_tso6=off");
        }
        let mut cmd = Command::new(require_tool("qemu-system-x86_64"));
        cmd.args(["-machine", "q35,accel=tcg", "-m", &MEMORY_MIB.to_string()])
            .args(["-smp", &self.queues.to_string()])
            .arg("-object")
            .arg(format!(
                "memory-backend-memfd,id=mem0,size={MEMORY_MIB}M,share=on"
            ))
            .args(["-numa", "node,memdev=mem0"])
            .arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(&self.initrd)
            .args(["-append", "console=ttyS0 panic=-1"])
            .args(["-display", "none", "-monitor", "none", "-no-reboot"])
            .arg("-serial")
            .arg(format!("file:{}", self.console.display()))
            .arg("-chardev")
            .arg(chardev)
            .arg("-netdev")
            .arg(format!(
                "vhost-user,id=n0,chardev=c0,queues={}",
                self.queues
            ))
            .arg("-device")
            .arg(device);
        cmd
    }

    /// Starts QEMU; it is reaped when the returned guest drops.
    pub fn spawn(&self) -> Guest {
        Guest {
            vm: Proc::spawn("qemu-system-x86_64", &mut self.command()),
            console: self.console.clone(),
        }
    }
}

/// A running QEMU guest and its console.
#[derive(Debug)]
pub struct Guest {
    pub vm: Proc,
    pub console: PathBuf,
}

impl Guest {
    /// Everything the guest printed so far.
    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    /// Waits until the console shows `marker`, failing (with the console and `context()`,
    /// e.g. a backend's log) if QEMU exits first. Returns the console.
    pub fn wait(
        &mut self,
        marker: &str,
        timeout: Duration,
        context: impl Fn() -> String,
    ) -> String {
        let console = self.console.clone();
        wait_for(
            &format!("{} to print {marker}", console.display()),
            timeout,
            || {
                let text = std::fs::read_to_string(&console).unwrap_or_default();
                if text.contains(marker) {
                    return true;
                }
                if let Ok(Some(status)) = self.vm.child.try_wait() {
                    panic!(
                        "QEMU exited ({status}) before {marker}:\n{text}\n{}",
                        context()
                    );
                }
                false
            },
        );
        self.text()
    }

    /// The value the guest printed as `KEY...` (the first line starting with `key`).
    pub fn value(&self, key: &str) -> String {
        let text = self.text();
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no {key} on the console:\n{text}"))
    }

    /// Whether QEMU is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.vm.child.try_wait(), Ok(None))
    }
}
