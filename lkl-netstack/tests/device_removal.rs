//! Network devices removed from a running kernel and added again, 100 times over a
//! packet port and 100 times over a TAP: each time the re-added device carries
//! traffic, and at the end the library's interfaces, the process's fds, threads and
//! RSS, and the kernel's own free memory and slab are back where they started.
//! Needs root (TAP, netns), iproute2 and ping.
#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a failed unwrap is a failed test; results are reported on stdout

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::frames::{KERNEL_IP, arp, kernel_device, ping};
use common::{Netns, connect_tap, kernel_complaints, run, wait_for_carrier};
use lkl_netstack::{
    BootConfig, DevicePort, Kernel, NetBackend, NetDeviceConfig, RemoveNetDeviceError, TapConfig,
    UnknownNetDevice,
};
use packet_ring::{MemoryPeer, memory_port_pair};

const CYCLES: usize = 100;
/// Cycles run before the start values are taken, so that first-touch growth (below)
/// is not counted.
const WARM_UP: usize = 3;
/// Host RSS may end this much above its start. Every resource a cycle uses is
/// freed, but RSS also counts pages that stay resident on purpose: the kernel's RAM
/// is one host mapping, and a page its allocator hands out for the first time stays
/// resident after the kernel frees it (the allocator reuses it; nothing returns it
/// to the host); glibc keeps freed heap and thread stacks cached too. Measured: 0
/// to 64 KiB over 100 cycles; losing 10 KiB per cycle would fail.
const RSS_SLACK_KIB: u64 = 1024;
/// The kernel's free memory (MemFree) may end this much below its start, and its
/// slab this much above: the slab allocator keeps partial slabs and the page
/// allocator its per-CPU lists, which is reuse, not loss. Measured: 0 to 8 KiB
/// over 100 cycles. Losing one page per cycle (4 KiB) would fail; a lost device
/// would cost its 256 posted receive buffers, about 1 MiB, each time.
const KERNEL_SLACK_KIB: u64 = 256;

/// Kernel tasks (kworkers) that may exist beyond the start: every kernel thread is a
/// host thread, and the kernel's workqueue pools start and retire workers as they
/// see fit. A task lost per cycle would be 100.
const KERNEL_TASK_SLACK: u64 = 2;

/// The process's own use of host resources (/proc/self), and the kernel's tasks.
#[derive(Debug, Clone, Copy)]
struct Usage {
    fds: usize,
    /// All host threads, /proc/self/status `Threads:`.
    threads: u64,
    /// Tasks inside the kernel (each runs on a host thread of its own).
    kernel_tasks: u64,
    rss_kib: u64,
}

fn status_field(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
}

fn host_threads() -> u64 {
    status_field(
        &std::fs::read_to_string("/proc/self/status").unwrap(),
        "Threads:",
    )
}

impl Usage {
    fn now(kernel: &Kernel) -> Usage {
        // A consistent pair: no thread started or ended between the two counts.
        let (threads, kernel_tasks) = loop {
            let threads = host_threads();
            let tasks = kernel.task_count().unwrap();
            if host_threads() == threads {
                break (threads, tasks);
            }
        };
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        Usage {
            fds: std::fs::read_dir("/proc/self/fd").unwrap().count(),
            threads,
            kernel_tasks,
            rss_kib: status_field(&status, "VmRSS:"),
        }
    }

    /// Host threads that are no kernel task: the devices' receive threads, the test's.
    fn threads_outside_kernel(&self) -> u64 {
        self.threads - self.kernel_tasks
    }

    fn assert_back_to(self, start: Usage, what: &str) {
        println!("{what}: host use {start:?} before, {self:?} after {CYCLES} cycles");
        assert_eq!(self.fds, start.fds, "{what}: open fds");
        assert_eq!(
            self.threads_outside_kernel(),
            start.threads_outside_kernel(),
            "{what}: threads besides the kernel's tasks"
        );
        assert!(
            self.kernel_tasks <= start.kernel_tasks + KERNEL_TASK_SLACK,
            "{what}: the kernel has {} more tasks",
            self.kernel_tasks - start.kernel_tasks
        );
        assert!(
            self.rss_kib <= start.rss_kib + RSS_SLACK_KIB,
            "{what}: RSS grew by {} KiB",
            self.rss_kib - start.rss_kib
        );
    }
}

/// The kernel's view of its memory (/proc/meminfo inside the library), in KiB.
#[derive(Debug, Clone, Copy)]
struct KernelMemory {
    free_kib: u64,
    slab_kib: u64,
}

impl KernelMemory {
    fn now(kernel: &Kernel) -> KernelMemory {
        // Deferred frees (RCU callbacks, the netdev's last references) run from
        // softirqs and workqueues shortly after a removal: give them a moment.
        std::thread::sleep(Duration::from_millis(300));
        let meminfo = kernel.read_file("/proc/meminfo").unwrap();
        KernelMemory {
            free_kib: status_field(&meminfo, "MemFree:"),
            slab_kib: status_field(&meminfo, "Slab:"),
        }
    }

    fn assert_back_to(self, start: KernelMemory, what: &str) {
        println!("{what}: kernel memory {start:?} before, {self:?} after {CYCLES} cycles");
        assert!(
            self.free_kib + KERNEL_SLACK_KIB >= start.free_kib,
            "{what}: the kernel's free memory fell by {} KiB",
            start.free_kib - self.free_kib
        );
        assert!(
            self.slab_kib <= start.slab_kib + KERNEL_SLACK_KIB,
            "{what}: the kernel's slab grew by {} KiB",
            self.slab_kib - start.slab_kib
        );
    }
}

fn link_names(kernel: &Kernel) -> Vec<String> {
    let mut names: Vec<_> = kernel
        .links()
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    names.sort();
    names
}

fn port_device() -> (NetDeviceConfig, MemoryPeer) {
    let (port, peer) = memory_port_pair(256, 2048).unwrap();
    (kernel_device(NetBackend::Port(DevicePort::new(port))), peer)
}

/// What the kernel holds for virtio-mmio devices: its memory resources (/proc/iomem)
/// and its interrupt lines with their handlers (/proc/interrupts), without counts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DeviceResources {
    iomem: Vec<String>,
    irqs: Vec<String>,
}

impl DeviceResources {
    fn now(kernel: &Kernel) -> DeviceResources {
        let iomem = kernel.read_file("/proc/iomem").unwrap();
        let interrupts = kernel.read_file("/proc/interrupts").unwrap();
        DeviceResources {
            iomem: iomem.lines().map(|l| l.trim().to_owned()).collect(),
            irqs: interrupts
                .lines()
                .filter(|l| l.contains("virtio"))
                .map(|l| {
                    let fields: Vec<_> = l.split_whitespace().collect();
                    format!("{} {}", fields[0], fields[fields.len() - 1])
                })
                .collect(),
        }
    }
}

/// Removes `index` and checks that it is gone for good: its interface, and every
/// call with its index.
fn remove(kernel: &Kernel, index: usize, name: &str) {
    kernel.remove_net_device(index).unwrap();
    assert!(
        !link_names(kernel).iter().any(|n| n == name),
        "{name} is still listed after its removal"
    );
    let unknown = UnknownNetDevice { index };
    assert_eq!(kernel.net_device_stats(index), Err(unknown));
    assert_eq!(kernel.set_net_device_link(index, false), Err(unknown));
    assert!(matches!(
        kernel.remove_net_device(index),
        Err(RemoveNetDeviceError::Unknown(u)) if u == unknown
    ));
    assert!(!kernel.net_device_indices().contains(&index));
    let left = DeviceResources::now(kernel);
    assert!(
        left.iomem.is_empty() && left.irqs.is_empty(),
        "the kernel still holds device resources: {left:?}"
    );
}

/// One cycle over a packet port: add, ARP and ping through it, remove. Returns the
/// index and what the kernel held for the device while it was there.
fn port_cycle(kernel: &Kernel, seq: u16) -> (usize, DeviceResources) {
    let (config, mut peer) = port_device();
    let (index, name) = kernel.add_net_device(&config).unwrap();
    assert_eq!(name, "eth0", "the kernel gives the lowest free name again");
    kernel.set_link_up(&name, true).unwrap();
    kernel
        .add_address(&name, Ipv4Addr::from(KERNEL_IP).into(), 24)
        .unwrap();
    wait_for_carrier(kernel, &name, true);
    arp(&mut peer);
    ping(&mut peer, seq, b"knic removal");
    let stats = kernel.net_device_stats(index).unwrap();
    assert!(
        stats.total.rx_packets >= 2 && stats.total.tx_packets >= 2,
        "{stats:?}"
    );
    let held = DeviceResources::now(kernel);
    remove(kernel, index, &name);
    (index, held)
}

/// One cycle over a TAP: add, and every tenth time ping it from a namespace; remove,
/// and the host's TAP goes with it. Returns the index and what the kernel held.
fn tap_cycle(kernel: &Kernel, tap: &str, ns: &Netns, cycle: usize) -> (usize, DeviceResources) {
    let (index, name) = kernel
        .add_net_device(&kernel_device(NetBackend::Tap(TapConfig {
            name: tap.into(),
        })))
        .unwrap();
    assert_eq!(name, "eth0");
    let pinged = cycle % 10 == 0 || cycle == CYCLES - 1;
    if pinged {
        connect_tap(kernel, &name, tap, ns, 236);
    }
    let host_tap = if pinged {
        format!("ip -n {} link show {tap}", ns.0)
    } else {
        format!("ip link show {tap}")
    };
    run(&host_tap);
    let held = DeviceResources::now(kernel);
    remove(kernel, index, &name);
    let out = std::process::Command::new("sh")
        .args(["-c", &host_tap])
        .output()
        .unwrap();
    assert!(!out.status.success(), "TAP {tap} outlived its device");
    (index, held)
}

#[test]
fn devices_come_and_go_without_leaks() {
    // A device from the command line goes the same way as added ones.
    let (boot_device, mut boot_peer) = port_device();
    let kernel = Kernel::boot(&BootConfig {
        net_devices: vec![boot_device],
        ..BootConfig::default()
    })
    .unwrap();
    assert_eq!(link_names(&kernel), ["eth0", "lo"]);
    kernel.set_link_up("eth0", true).unwrap();
    kernel
        .add_address("eth0", Ipv4Addr::from(KERNEL_IP).into(), 24)
        .unwrap();
    wait_for_carrier(&kernel, "eth0", true);
    arp(&mut boot_peer);
    remove(&kernel, 0, "eth0");
    assert!(matches!(
        kernel.remove_net_device(7),
        Err(RemoveNetDeviceError::Unknown(UnknownNetDevice { index: 7 }))
    ));
    let interfaces = link_names(&kernel);
    assert_eq!(interfaces, ["lo"]);

    // Over a packet port. Every device gets the same window and interrupt line
    // (and the same virtio index) as the first: each removal gave them back.
    let (mut last, first) = port_cycle(&kernel, 0);
    assert_eq!(first.iomem.len(), 2, "window and driver region: {first:?}");
    assert_eq!(first.irqs.len(), 1, "{first:?}");
    for seq in 1..WARM_UP {
        last = port_cycle(&kernel, seq as u16).0;
    }
    let host = Usage::now(&kernel);
    let memory = KernelMemory::now(&kernel);
    for seq in WARM_UP..WARM_UP + CYCLES {
        let (index, held) = port_cycle(&kernel, seq as u16);
        assert!(last < index, "indices are never reused");
        assert_eq!(held, first, "cycle {seq} got other kernel resources");
        last = index;
    }
    assert_eq!(link_names(&kernel), interfaces);
    assert!(kernel.net_device_indices().is_empty());
    KernelMemory::now(&kernel).assert_back_to(memory, "packet port");
    Usage::now(&kernel).assert_back_to(host, "packet port");

    // Over a TAP.
    let id = std::process::id() % 100_000;
    let tap = format!("knrm-{id}");
    let ns = Netns(format!("kremove-{id}"));
    run(&format!("ip netns add {}", ns.0));
    for cycle in 0..WARM_UP {
        tap_cycle(&kernel, &tap, &ns, cycle * 10);
    }
    let host = Usage::now(&kernel);
    let memory = KernelMemory::now(&kernel);
    for cycle in 0..CYCLES {
        let (index, held) = tap_cycle(&kernel, &tap, &ns, cycle);
        assert!(last < index, "indices are never reused");
        assert_eq!(held, first, "TAP cycle {cycle} got other kernel resources");
        last = index;
    }
    assert_eq!(link_names(&kernel), interfaces);
    KernelMemory::now(&kernel).assert_back_to(memory, "TAP");
    Usage::now(&kernel).assert_back_to(host, "TAP");

    // The driver's remove path ran clean each time (virtio_mmio warns when a queue
    // stays ready after its deletion, the core when the device was not reset).
    let complaints = kernel_complaints(&kernel);
    assert!(
        complaints.is_empty(),
        "the kernel complained: {complaints:#?}"
    );
    kernel.halt().unwrap();
}
