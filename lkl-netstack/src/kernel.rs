//! Booting and halting the library kernel, and its network devices coming and going.
//!
//! # Network devices: adding and removing
//!
//! A device is three things on the host side, besides its backend: a device model
//! ([`VirtioNetDevice`], with one receive thread per queue pair), an MMIO window on
//! the bus ([`mmio`]) and an interrupt line from the kernel's allocator. The kernel
//! side is a virtio-mmio platform device, its `virtio_net` driver and the interface.
//! [`Kernel::add_net_device`] builds the host side and then asks the kernel to probe
//! it (`knic_virtio_mmio_add`); [`Kernel::remove_net_device`] undoes it in the
//! reverse order:
//!
//! 1. `knic_virtio_mmio_remove(base)` unregisters the platform device. The driver's
//!    remove path runs inside that call, on the calling thread, which owns the
//!    kernel's CPU: `unregister_netdev` (the interface goes, its queues stop), then
//!    a device reset, which reaches the model as a STATUS write of 0 from kernel
//!    context, then the virtqueues are deleted (QueueReady 0) and their memory freed,
//!    and the interrupt is freed. The reset takes each queue side's lock, so it waits
//!    for a receive round in progress (a round never blocks: TAP reads are
//!    non-blocking, port reads take what is there), and afterwards every side is
//!    "not running": no thread touches the rings again, before the kernel frees them.
//!    A receive thread that raises the interrupt in that window only sets a pending
//!    bit and posts the idle semaphore (`knic_trigger_irq` runs no kernel code); the
//!    kernel finds no handler, or, once a later device owns the line, a handler that
//!    reads an empty InterruptStatus and returns IRQ_NONE.
//! 2. The receive threads are told to stop and joined. Before this step they are
//!    idle but alive, so if the kernel refuses the removal the device still works.
//! 3. The MMIO window leaves the bus: the kernel released the window's resource in
//!    step 1, so the next device added gets the same window.
//! 4. The interrupt line goes back to the allocator, only now that no thread of
//!    this device can raise it, so the next device never inherits a stale trigger
//!    from a live thread.
//! 5. The model is dropped with its backend: TAP queues close (the host removes a
//!    non-persistent TAP with its last queue), port halves drop, and the counters go
//!    with it.
//!
//! **Indices are never reused.** Each device added gets the next index (boot devices
//! are 0..n); a removed index stays unknown for good, and every call with it
//! ([`Kernel::net_device_stats`], [`Kernel::set_net_device_link`],
//! [`Kernel::remove_net_device`]) returns [`UnknownNetDevice`]. A handle the caller
//! kept can therefore never reach a different device. **Names are the kernel's**: it
//! gives a new interface the lowest free `eth<N>`, so after eth0 is removed the next
//! device added is eth0 again, under a new index. `add_net_device` returns both.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lkl_sys::nr;
use packet_ring::GuestOffloads;

use std::net::IpAddr;

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::device::{NetBackend, NetDeviceConfig, NetDeviceStats, VirtioNetDevice, mmio};
use crate::host::{HOST_OPS, HOST_OPS_GENERIC_CRYPTO};
use crate::netlink::{self, FwmarkRule, Link, NetfilterReply, Route};
use crate::socket::Fd;
use crate::sys;

/// The main routing table (RT_TABLE_MAIN), where routes go unless a table is named.
pub const MAIN_TABLE: u32 = 254;

/// How to boot the kernel.
#[derive(Debug, Clone)]
pub struct BootConfig {
    /// Size of the kernel's RAM (rounded up to 4 MiB).
    pub memory_bytes: u64,
    /// Extra kernel command line, e.g. `"loglevel=4"`.
    pub cmdline: String,
    /// Network devices, in order: the kernel names them eth0, eth1, ...
    pub net_devices: Vec<NetDeviceConfig>,
    /// The kernel's AES-GCM (kernel TLS) runs in host code with the CPU's AES
    /// instructions (true), or as the kernel's generic C code (false: ~100x slower).
    pub host_crypto: bool,
}

impl Default for BootConfig {
    fn default() -> Self {
        BootConfig {
            memory_bytes: 256 << 20,
            cmdline: String::new(),
            net_devices: Vec::new(),
            host_crypto: true,
        }
    }
}

/// A network device that could not be created, at boot or added later.
#[derive(Debug, thiserror::Error)]
#[error("network device {index} ({backend}) cannot be created")]
pub struct NetDeviceError {
    pub index: usize,
    pub backend: String,
    #[source]
    pub source: io::Error,
}

/// Why a network device cannot be used or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the library kernel has no network device {index}: it was removed or never added \
     (indices are never reused; add_net_device returns the index of a new device)"
)]
pub struct UnknownNetDevice {
    pub index: usize,
}

/// A network device that could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveNetDeviceError {
    #[error(transparent)]
    Unknown(#[from] UnknownNetDevice),
    /// The kernel refused; the device is still there and still works.
    #[error("the kernel did not remove network device {index}; it stays in service")]
    Kernel {
        index: usize,
        #[source]
        source: io::Error,
    },
}

/// A device's host side: the model, its MMIO window and its interrupt line.
struct LiveDevice {
    device: Arc<VirtioNetDevice>,
    base: u64,
    irq: i32,
}

impl LiveDevice {
    /// Takes the host side down once the kernel knows no device at `base` (steps 2 to
    /// 5 of the module docs).
    fn release(self) {
        self.device.stop();
        drop(mmio::unregister(self.base));
        // SAFETY: the line was allocated for this device; the kernel freed its handler
        // (or never requested one) and the device's threads, the only host code that
        // raised it, have ended.
        unsafe { lkl_sys::knic_put_irq(self.irq) };
        if Arc::strong_count(&self.device) != 1 {
            tracing::error!("a removed network device is still referenced; its backend stays open");
        }
    }
}

/// The devices by index, and the index the next one gets.
#[derive(Default)]
struct NetDevices {
    live: BTreeMap<usize, LiveDevice>,
    next_index: usize,
}

impl NetDevices {
    fn get(&self, index: usize) -> Result<&Arc<VirtioNetDevice>, UnknownNetDevice> {
        self.live
            .get(&index)
            .map(|d| &d.device)
            .ok_or(UnknownNetDevice { index })
    }

    /// Takes down the host side of devices the kernel never probed (a failed boot).
    fn release_all(self) {
        for live in self.live.into_values() {
            live.release();
        }
    }
}

fn backend_name(config: &NetDeviceConfig) -> String {
    match &config.backend {
        NetBackend::Tap(tap) => format!("TAP {}", tap.name),
        NetBackend::Port(_) => "a packet port".to_owned(),
    }
}

/// Makes device `index` and its MMIO window; the kernel has yet to probe it.
fn create_net_device(index: usize, config: &NetDeviceConfig) -> Result<LiveDevice, NetDeviceError> {
    let err = |source| NetDeviceError {
        index,
        backend: backend_name(config),
        source,
    };
    // SAFETY: allocates an interrupt line; callable before and after boot.
    let irq = unsafe { lkl_sys::knic_get_free_irq(c"virtio-net".as_ptr()) };
    if irq < 0 {
        return Err(err(io::Error::from_raw_os_error(-irq)));
    }
    // SAFETY: returns the line allocated above, which nothing uses yet.
    let put_irq = || unsafe { lkl_sys::knic_put_irq(irq) };
    let device = VirtioNetDevice::new(config.clone(), irq).map_err(|source| {
        put_irq();
        err(source)
    })?;
    if let Err(source) = device.start(&format!("net{index}")) {
        device.stop();
        put_irq();
        return Err(err(source));
    }
    let base = mmio::register(device.clone());
    Ok(LiveDevice { device, base, irq })
}

/// Why a boot failed.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(
        "a Linux kernel was already booted in this process: the library holds one kernel per \
         process and boots it once; share the first Kernel, or run another process"
    )]
    AlreadyBooted,
    #[error("the kernel command line contains a NUL byte")]
    CommandLine,
    #[error(transparent)]
    NetDevice(#[from] NetDeviceError),
    #[error("the library kernel did not come up")]
    Start(#[source] io::Error),
    #[error("mounting procfs inside the kernel failed")]
    MountProc(#[source] io::Error),
    #[error("raising the kernel's open-file limit failed")]
    FdLimit(#[source] io::Error),
    #[error("bringing up the loopback interface inside the kernel failed")]
    Loopback(#[source] io::Error),
    #[error("setting the kernel's wall clock to the host's failed")]
    WallClock(#[source] io::Error),
}

static BOOTED: AtomicBool = AtomicBool::new(false);

fn sysctl_path(name: &str) -> String {
    format!("/proc/sys/{}", name.replace('.', "/"))
}

/// Opens a path inside the kernel.
pub(crate) fn open(path: &str, flags: i32) -> io::Result<Fd> {
    let path = CString::new(path)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: `path` is NUL-terminated and lives across the call.
    let fd = unsafe {
        sys::syscall(
            nr::OPENAT,
            [
                i64::from(libc::AT_FDCWD),
                path.as_ptr() as i64,
                i64::from(flags | libc::O_CLOEXEC),
                0o644,
                0,
                0,
            ],
        )?
    };
    Ok(Fd::from_raw(fd as i32))
}

pub(crate) fn is_running() -> bool {
    // SAFETY: reads a flag.
    unsafe { lkl_sys::knic_is_running() != 0 }
}

/// The running kernel. Syscalls may come from any number of host threads at once.
pub struct Kernel {
    boot_time: Duration,
    /// Live devices by index (boot devices 0..n, then one more per device added).
    net_devices: RwLock<NetDevices>,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("boot_time", &self.boot_time)
            .field("net_devices", &read(&self.net_devices).live.len())
            .finish()
    }
}

impl Kernel {
    /// Boots Linux inside this process; returns once PID 1 is ready for syscalls.
    pub fn boot(config: &BootConfig) -> Result<Kernel, BootError> {
        if BOOTED.swap(true, Ordering::SeqCst) {
            return Err(BootError::AlreadyBooted);
        }
        let started = Instant::now();
        let mut cmdline = config.cmdline.clone();
        let mut net_devices = NetDevices::default();
        for (index, dev) in config.net_devices.iter().enumerate() {
            let live = match create_net_device(index, dev) {
                Ok(live) => live,
                Err(e) => {
                    net_devices.release_all();
                    return Err(e.into());
                }
            };
            cmdline.push_str(&format!(
                " virtio_mmio.device={:#x}@{:#x}:{}",
                mmio::MMIO_SIZE,
                live.base,
                live.irq
            ));
            net_devices.live.insert(index, live);
            net_devices.next_index = index + 1;
        }
        let Ok(cmdline) = CString::new(cmdline) else {
            net_devices.release_all();
            return Err(BootError::CommandLine);
        };
        let ops = if config.host_crypto {
            &HOST_OPS
        } else {
            &HOST_OPS_GENERIC_CRYPTO
        };
        // SAFETY: both tables are statics of functions that honour the host-ops
        // contract (host.rs); the command line is copied before the call returns.
        let rc = unsafe { lkl_sys::knic_start_kernel(ops, config.memory_bytes, cmdline.as_ptr()) };
        if rc != 0 {
            net_devices.release_all();
            return Err(BootError::Start(io::Error::from_raw_os_error(-rc)));
        }
        let kernel = Kernel {
            boot_time: started.elapsed(),
            net_devices: RwLock::new(net_devices),
        };
        tracing::info!(
            "Linux {} booted as a library in {:.1} ms",
            lkl_sys::KERNEL_VERSION,
            kernel.boot_time.as_secs_f64() * 1e3
        );
        crate::host::install_debug_exit_check();
        kernel.mount_proc().map_err(BootError::MountProc)?;
        kernel.raise_fd_limit().map_err(BootError::FdLimit)?;
        crate::netlink::set_link("lo", Some(true), None).map_err(BootError::Loopback)?;
        kernel.set_wall_clock().map_err(BootError::WallClock)?;
        Ok(kernel)
    }

    /// Counters and state of network device `index`, per queue pair and in total.
    pub fn net_device_stats(&self, index: usize) -> Result<NetDeviceStats, UnknownNetDevice> {
        read(&self.net_devices).get(index).map(|d| d.stats())
    }

    /// The indices of the network devices present, in order.
    pub fn net_device_indices(&self) -> Vec<usize> {
        read(&self.net_devices).live.keys().copied().collect()
    }

    /// Sets the link state network device `index` reports. The driver hears of it by a
    /// configuration-change interrupt and turns the carrier on or off (IFF_LOWER_UP,
    /// `Link::carrier`).
    pub fn set_net_device_link(&self, index: usize, up: bool) -> Result<(), UnknownNetDevice> {
        read(&self.net_devices).get(index).map(|d| d.set_link(up))
    }

    /// Adds a network device to the running kernel: its driver probes it before this
    /// returns. Returns its index (for `net_device_stats`; never one used before) and
    /// the interface name (the kernel's lowest free `eth<N>`).
    pub fn add_net_device(
        &self,
        config: &NetDeviceConfig,
    ) -> Result<(usize, String), NetDeviceError> {
        let mut devices = write(&self.net_devices);
        let index = devices.next_index;
        let err = |source| NetDeviceError {
            index,
            backend: backend_name(config),
            source,
        };
        let known: Vec<u32> = self.links().map_err(err)?.iter().map(|l| l.index).collect();
        let live = create_net_device(index, config)?;
        devices.next_index += 1;
        if let Err(source) = sys::syscall_values(
            nr::KNIC_VIRTIO_MMIO_ADD,
            [
                live.base as i64,
                mmio::MMIO_SIZE as i64,
                i64::from(live.irq),
                0,
                0,
                0,
            ],
        ) {
            // The kernel registered nothing at the window.
            live.release();
            return Err(err(source));
        }
        let name = self.links().map_err(err).and_then(|links| {
            links
                .into_iter()
                .find(|l| !known.contains(&l.index) && l.mac == Some(config.mac))
                .map(|l| l.name)
                .ok_or_else(|| {
                    err(io::Error::other(
                        "the driver registered no interface (see the kernel log)",
                    ))
                })
        });
        match name {
            Ok(name) => {
                devices.live.insert(index, live);
                Ok((index, name))
            }
            Err(e) => {
                // Registered but unusable: take the platform device away again.
                match remove_from_kernel(live.base) {
                    Ok(()) => live.release(),
                    Err(source) => {
                        tracing::error!(
                            "network device {index}: the kernel kept a device it cannot \
                             use ({source}); its window stays allocated"
                        );
                        devices.live.insert(index, live);
                    }
                }
                Err(e)
            }
        }
    }

    /// Removes network device `index`: the kernel's driver lets go of it (its interface
    /// disappears, with its addresses and routes) before this returns, then its receive
    /// threads end, its backend closes and its MMIO window and interrupt line are free
    /// for the next device. The module docs say in which order, and why.
    pub fn remove_net_device(&self, index: usize) -> Result<(), RemoveNetDeviceError> {
        let mut devices = write(&self.net_devices);
        let base = devices
            .live
            .get(&index)
            .ok_or(UnknownNetDevice { index })?
            .base;
        remove_from_kernel(base)
            .map_err(|source| RemoveNetDeviceError::Kernel { index, source })?;
        if let Some(live) = devices.live.remove(&index) {
            live.release();
        }
        Ok(())
    }

    /// Sets how many queue pairs interface `name` uses (`ethtool -L NAME combined N`);
    /// the kernel starts a multi-queue virtio-net device with one pair per CPU.
    pub fn set_queue_pairs(&self, name: &str, pairs: u32) -> io::Result<()> {
        crate::device::set_combined_channels(name, pairs)
    }

    /// Which transmit offloads the kernel may use on interface `name` (`ethtool -K`):
    /// partial checksums (`offloads.csum`) and TSO (all of `tso4`, `tso6`, `ecn`, since the
    /// kernel switches TSO as one). Without them it checksums and segments in software, so
    /// a device whose far side (a guest that did not negotiate GUEST_TSO*) cannot take
    /// large frames is given none. Only offloads the device offers can be turned on.
    pub fn set_tx_offloads(&self, name: &str, offloads: GuestOffloads) -> io::Result<()> {
        let tso = offloads.csum && offloads.tso4 && offloads.tso6 && offloads.ecn;
        crate::device::set_tx_offloads(name, offloads.csum, tso)
    }

    /// How long `boot` took until the kernel accepted syscalls.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// Powers the kernel off: kernel threads end, host threads blocked inside return
    /// `ESHUTDOWN`, and so does every later call.
    pub fn halt(&self) -> io::Result<()> {
        // Devices' receive threads write into the kernel's RAM, which the halt unmaps.
        for live in read(&self.net_devices).live.values() {
            live.device.stop();
        }
        // SAFETY: no arguments; the kernel stops every thread it started.
        let rc = unsafe { lkl_sys::knic_halt() };
        if rc < 0 {
            Err(io::Error::from_raw_os_error(-rc as i32))
        } else {
            Ok(())
        }
    }

    /// Whether the kernel still accepts syscalls.
    pub fn is_running(&self) -> bool {
        is_running()
    }

    /// The calling thread's process id inside the kernel (all host threads share PID 1).
    pub fn getpid(&self) -> io::Result<i64> {
        sys::syscall_values(nr::GETPID, [0; 6])
    }

    /// Sets the kernel's wall clock (`CLOCK_REALTIME`, which starts at the epoch: the port
    /// has no persistent clock) to the host's, once at boot; it then runs with the host's
    /// monotonic clock. Socket timestamps (`SO_TIMESTAMP`, `SO_TIMESTAMPING`) handed to
    /// programs are on it.
    fn set_wall_clock(&self) -> io::Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(io::Error::other)?;
        let ts = libc::timespec {
            tv_sec: now.as_secs() as libc::time_t,
            tv_nsec: now.subsec_nanos().into(),
        };
        // SAFETY: `ts` is a valid timespec for the kernel to read, alive across the call.
        unsafe {
            sys::syscall(
                nr::CLOCK_SETTIME,
                [
                    i64::from(libc::CLOCK_REALTIME),
                    &ts as *const libc::timespec as i64,
                    0,
                    0,
                    0,
                    0,
                ],
            )?;
        }
        Ok(())
    }

    /// The kernel's wall clock (`CLOCK_REALTIME`) as time since the Unix epoch: the host's
    /// from boot on ([`Kernel::boot`] sets it), then running with the monotonic clock.
    pub fn wall_clock(&self) -> io::Result<std::time::Duration> {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec for the kernel to write, alive across the call.
        unsafe {
            sys::syscall(
                nr::CLOCK_GETTIME,
                [
                    i64::from(libc::CLOCK_REALTIME),
                    &mut ts as *mut libc::timespec as i64,
                    0,
                    0,
                    0,
                    0,
                ],
            )?;
        }
        let secs = u64::try_from(ts.tv_sec).map_err(io::Error::other)?;
        Ok(std::time::Duration::new(secs, ts.tv_nsec as u32))
    }

    /// How many reports (BUG, WARNING, oops, list or slab corruption, lockdep) the kernel
    /// has printed since boot. Zero in a healthy kernel; the `debug` build aborts at the first.
    pub fn kernel_reports(&self) -> u64 {
        crate::host::KERNEL_REPORTS.load(Ordering::SeqCst)
    }

    /// The kernel log so far (the `syslog` syscall, like `dmesg`).
    pub fn kernel_log(&self) -> io::Result<String> {
        const SYSLOG_ACTION_READ_ALL: i64 = 3;
        const SYSLOG_ACTION_SIZE_BUFFER: i64 = 10;
        let size = sys::syscall_values(nr::SYSLOG, [SYSLOG_ACTION_SIZE_BUFFER, 0, 0, 0, 0, 0])?;
        let mut buf = vec![0u8; usize::try_from(size).unwrap_or(0).max(4096)];
        // SAFETY: the kernel writes at most buf.len() bytes into buf.
        let n = unsafe {
            sys::syscall(
                nr::SYSLOG,
                [
                    SYSLOG_ACTION_READ_ALL,
                    buf.as_mut_ptr() as i64,
                    buf.len() as i64,
                    0,
                    0,
                    0,
                ],
            )?
        };
        buf.truncate(usize::try_from(n).unwrap_or(0));
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// The kernel's network interfaces (an RTM_GETLINK dump).
    pub fn links(&self) -> io::Result<Vec<Link>> {
        netlink::links()
    }

    /// Brings an interface up or down.
    pub fn set_link_up(&self, name: &str, up: bool) -> io::Result<()> {
        netlink::set_link(name, Some(up), None)
    }

    /// Sets an interface's MTU.
    pub fn set_link_mtu(&self, name: &str, mtu: u32) -> io::Result<()> {
        netlink::set_link(name, None, Some(mtu))
    }

    /// Adds `addr/prefix_len` to an interface (RTM_NEWADDR).
    pub fn add_address(&self, name: &str, addr: IpAddr, prefix_len: u8) -> io::Result<()> {
        netlink::add_address(name, addr, prefix_len)
    }

    /// Adds a route to the main table (RTM_NEWROUTE), via a gateway and/or a device.
    pub fn add_route(
        &self,
        destination: IpAddr,
        prefix_len: u8,
        gateway: Option<IpAddr>,
        dev: Option<&str>,
    ) -> io::Result<()> {
        netlink::add_route(destination, prefix_len, gateway, dev, MAIN_TABLE)
    }

    /// Adds a route to routing table `table` (a VRF's, say), via a gateway and/or a device.
    pub fn add_route_in_table(
        &self,
        table: u32,
        destination: IpAddr,
        prefix_len: u8,
        gateway: Option<IpAddr>,
        dev: Option<&str>,
    ) -> io::Result<()> {
        netlink::add_route(destination, prefix_len, gateway, dev, table)
    }

    /// The main routing table for IPv4 or IPv6 (an RTM_GETROUTE dump).
    pub fn routes(&self, ipv6: bool) -> io::Result<Vec<Route>> {
        netlink::routes(ipv6, MAIN_TABLE)
    }

    /// Routing table `table` for IPv4 or IPv6 (a VRF's table, say).
    pub fn routes_in_table(&self, ipv6: bool, table: u32) -> io::Result<Vec<Route>> {
        netlink::routes(ipv6, table)
    }

    /// Creates a VRF device `name` (up) whose routes live in table `table`.
    pub fn add_vrf(&self, name: &str, table: u32) -> io::Result<()> {
        netlink::add_vrf(name, table)
    }

    /// Enslaves interface `name` to the VRF (or other master) `master`; `None` frees it.
    pub fn set_link_master(&self, name: &str, master: Option<&str>) -> io::Result<()> {
        netlink::set_master(name, master)
    }

    /// Adds a policy routing rule: packets with the rule's firewall mark look up its table.
    pub fn add_fwmark_rule(&self, rule: &FwmarkRule) -> io::Result<()> {
        netlink::add_fwmark_rule(rule)
    }

    /// Deletes a rule added by [`Kernel::add_fwmark_rule`].
    pub fn delete_fwmark_rule(&self, rule: &FwmarkRule) -> io::Result<()> {
        netlink::delete_fwmark_rule(rule)
    }

    /// One NETLINK_NETFILTER exchange (nf_tables, ctnetlink): `messages` are complete
    /// netlink messages the caller encoded; waits for `acks` acknowledgements, or for the
    /// end of a dump when `acks` is 0. The kernel's first error is returned.
    pub fn netfilter(&self, messages: &[u8], acks: usize) -> io::Result<Vec<NetfilterReply>> {
        netlink::netfilter(messages, acks)
    }

    /// Deletes a virtual interface (a VRF), freeing its slaves.
    pub fn delete_link(&self, name: &str) -> io::Result<()> {
        netlink::delete_link(name)
    }

    /// Tasks bound to host threads right now: the threads of PID 1's process minus
    /// PID 1 itself (from /proc/1/status inside the kernel).
    pub fn host_task_count(&self) -> io::Result<u64> {
        let status = self.read_file("/proc/1/status")?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|threads| threads - 1)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "no Threads: line in /proc/1/status",
                )
            })
    }

    /// Reads a sysctl, e.g. `net.ipv4.tcp_congestion_control` (procfs inside the kernel).
    pub fn sysctl(&self, name: &str) -> io::Result<String> {
        Ok(self.read_file(&sysctl_path(name))?.trim_end().to_owned())
    }

    /// Writes a sysctl, e.g. `("net.core.somaxconn", "4096")`.
    pub fn set_sysctl(&self, name: &str, value: &str) -> io::Result<()> {
        self.write_file(&sysctl_path(name), value.as_bytes())
    }

    /// Opens a file of the kernel's filesystems for reading (e.g. to `send_file` it).
    pub fn open_file(&self, path: &str) -> io::Result<Fd> {
        open(path, libc::O_RDONLY)
    }

    /// Reads a whole file of the kernel's own filesystems (procfs, the ramfs root).
    pub fn read_file(&self, path: &str) -> io::Result<String> {
        let fd = open(path, libc::O_RDONLY)?;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: the kernel writes at most buf.len() bytes into buf.
            let n = unsafe {
                sys::syscall(
                    nr::READ,
                    [
                        i64::from(fd.raw()),
                        buf.as_mut_ptr() as i64,
                        buf.len() as i64,
                        0,
                        0,
                        0,
                    ],
                )?
            };
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
        String::from_utf8(out).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Copies a host file into the kernel's filesystems (ramfs), streaming it, so
    /// that sockets can `send_file` it; returns its length. The library has no
    /// view of the host's files otherwise.
    pub fn import_file(&self, host: &std::path::Path, path: &str) -> io::Result<u64> {
        let mut source = std::fs::File::open(host)?;
        let fd = open(path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC)?;
        let mut chunk = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            let n = std::io::Read::read(&mut source, &mut chunk)?;
            if n == 0 {
                return Ok(total);
            }
            write_all(&fd, &chunk[..n])?;
            total += n as u64;
        }
    }

    /// Writes `data` to a file of the kernel's filesystems (created if missing).
    pub fn write_file(&self, path: &str, data: &[u8]) -> io::Result<()> {
        let fd = open(path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC)?;
        write_all(&fd, data)
    }

    /// Number of tasks (kernel threads and host-thread tasks) alive in the kernel.
    pub fn task_count(&self) -> io::Result<u64> {
        let mut info = std::mem::MaybeUninit::<libc::sysinfo>::zeroed();
        // SAFETY: `info` is a writable struct sysinfo; same layout as the kernel's on this host.
        unsafe { sys::syscall(nr::SYSINFO, [info.as_mut_ptr() as i64, 0, 0, 0, 0, 0])? };
        // SAFETY: the kernel filled it in.
        Ok(u64::from(unsafe { info.assume_init() }.procs))
    }

    /// Host threads share PID 1's limits; a network stack wants the kernel's maximum
    /// number of descriptors (fs.nr_open), not the 1024 an init process starts with.
    fn raise_fd_limit(&self) -> io::Result<()> {
        const NR_OPEN: u64 = 1 << 20;
        let limit = libc::rlimit64 {
            rlim_cur: NR_OPEN,
            rlim_max: NR_OPEN,
        };
        // SAFETY: the kernel reads one struct rlimit64 (same layout as the host's).
        unsafe {
            sys::syscall(
                nr::PRLIMIT64,
                [
                    0,
                    i64::from(libc::RLIMIT_NOFILE),
                    &limit as *const _ as i64,
                    0,
                    0,
                    0,
                ],
            )?;
        }
        Ok(())
    }

    fn mount_proc(&self) -> io::Result<()> {
        let dir = c"/proc";
        // SAFETY: NUL-terminated strings that live across the calls.
        unsafe {
            match sys::syscall(
                nr::MKDIRAT,
                [libc::AT_FDCWD as i64, dir.as_ptr() as i64, 0o555, 0, 0, 0],
            ) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e),
            }
            sys::syscall(
                nr::MOUNT,
                [
                    c"proc".as_ptr() as i64,
                    dir.as_ptr() as i64,
                    c"proc".as_ptr() as i64,
                    0,
                    0,
                    0,
                ],
            )?;
        }
        Ok(())
    }
}

/// Writes all of `data` to a library file.
fn write_all(fd: &Fd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: the kernel reads at most data.len() bytes from data.
        let n = unsafe {
            sys::syscall(
                nr::WRITE,
                [
                    i64::from(fd.raw()),
                    data.as_ptr() as i64,
                    data.len() as i64,
                    0,
                    0,
                    0,
                ],
            )?
        };
        data = &data[n as usize..];
    }
    Ok(())
}

/// Asks the kernel to unregister the virtio-mmio device at `base`; its driver's
/// remove path has run when this returns.
fn remove_from_kernel(base: u64) -> io::Result<()> {
    sys::syscall_values(nr::KNIC_VIRTIO_MMIO_REMOVE, [base as i64, 0, 0, 0, 0, 0]).map(drop)
}

/// The device list for reading; a panic elsewhere does not hide the devices.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// The device list for adding or removing.
fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
