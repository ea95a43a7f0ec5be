//! Booting and halting the library kernel.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lkl_sys::nr;

use std::net::IpAddr;

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use crate::device::{NetBackend, NetDeviceConfig, NetDeviceStats, VirtioNetDevice, mmio};
use crate::host::{HOST_OPS, HOST_OPS_GENERIC_CRYPTO};
use crate::netlink::{self, Link, Route};
use crate::socket::Fd;
use crate::sys;

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

/// Makes device `index` and its MMIO window; the kernel has yet to probe it.
fn create_net_device(
    index: usize,
    config: &NetDeviceConfig,
) -> Result<(Arc<VirtioNetDevice>, u64, i32), NetDeviceError> {
    let err = |source| NetDeviceError {
        index,
        backend: match &config.backend {
            NetBackend::Tap(tap) => format!("TAP {}", tap.name),
            NetBackend::Port(_) => "a packet port".to_owned(),
        },
        source,
    };
    // SAFETY: allocates an interrupt line; callable before and after boot.
    let irq = unsafe { lkl_sys::knic_get_free_irq(c"virtio-net".as_ptr()) };
    if irq < 0 {
        return Err(err(io::Error::from_raw_os_error(-irq)));
    }
    let device = match VirtioNetDevice::new(config.clone(), irq) {
        Ok(device) => device,
        Err(source) => {
            // SAFETY: returns the line allocated above, which nothing uses.
            unsafe { lkl_sys::knic_put_irq(irq) };
            return Err(err(source));
        }
    };
    let base = mmio::register(device.clone());
    device.start(&format!("eth{index}")).map_err(err)?;
    Ok((device, base, irq))
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
    /// Index i is the device the kernel named eth`i` at boot, or the i-th added.
    net_devices: RwLock<Vec<Arc<VirtioNetDevice>>>,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("boot_time", &self.boot_time)
            .field("net_devices", &read(&self.net_devices).len())
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
        let mut net_devices = Vec::with_capacity(config.net_devices.len());
        for (index, dev) in config.net_devices.iter().enumerate() {
            let (device, base, irq) = create_net_device(index, dev)?;
            cmdline.push_str(&format!(
                " virtio_mmio.device={:#x}@{base:#x}:{irq}",
                mmio::MMIO_SIZE
            ));
            net_devices.push(device);
        }
        let cmdline = CString::new(cmdline).map_err(|_| BootError::CommandLine)?;
        let ops = if config.host_crypto {
            &HOST_OPS
        } else {
            &HOST_OPS_GENERIC_CRYPTO
        };
        // SAFETY: both tables are statics of functions that honour the host-ops
        // contract (host.rs); the command line is copied before the call returns.
        let rc = unsafe { lkl_sys::knic_start_kernel(ops, config.memory_bytes, cmdline.as_ptr()) };
        if rc != 0 {
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
        Ok(kernel)
    }

    /// Counters and state of network device `index` (eth`index`), per queue pair and
    /// in total.
    pub fn net_device_stats(&self, index: usize) -> Option<NetDeviceStats> {
        read(&self.net_devices).get(index).map(|d| d.stats())
    }

    /// Sets the link state network device `index` reports. The driver hears of it by a
    /// configuration-change interrupt and turns the carrier on or off (IFF_LOWER_UP,
    /// `Link::carrier`). Returns false for an unknown device.
    pub fn set_net_device_link(&self, index: usize, up: bool) -> bool {
        read(&self.net_devices)
            .get(index)
            .map(|d| d.set_link(up))
            .is_some()
    }

    /// Adds a network device to the running kernel: its driver probes it before this
    /// returns. Returns its index (for `net_device_stats`) and interface name.
    pub fn add_net_device(
        &self,
        config: &NetDeviceConfig,
    ) -> Result<(usize, String), NetDeviceError> {
        let mut devices = self
            .net_devices
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let index = devices.len();
        let (device, base, irq) = create_net_device(index, config)?;
        let err = |source| NetDeviceError {
            index,
            backend: "added device".into(),
            source,
        };
        let known: Vec<u32> = self.links().map_err(err)?.iter().map(|l| l.index).collect();
        if let Err(source) = sys::syscall_values(
            nr::KNIC_VIRTIO_MMIO_ADD,
            [base as i64, mmio::MMIO_SIZE as i64, i64::from(irq), 0, 0, 0],
        ) {
            device.stop();
            // SAFETY: the line was allocated for this device, which the kernel refused.
            unsafe { lkl_sys::knic_put_irq(irq) };
            // The MMIO window stays registered but is never probed.
            return Err(err(source));
        }
        devices.push(device);
        let name = self
            .links()
            .map_err(err)?
            .into_iter()
            .find(|l| !known.contains(&l.index) && l.mac == Some(config.mac))
            .map(|l| l.name)
            .ok_or_else(|| err(io::Error::other("the driver registered no interface")))?;
        Ok((index, name))
    }

    /// Sets how many queue pairs interface `name` uses (`ethtool -L NAME combined N`);
    /// the kernel starts a multi-queue virtio-net device with one pair per CPU.
    pub fn set_queue_pairs(&self, name: &str, pairs: u32) -> io::Result<()> {
        crate::device::set_combined_channels(name, pairs)
    }

    /// How long `boot` took until the kernel accepted syscalls.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// Powers the kernel off: kernel threads end, host threads blocked inside return
    /// `ESHUTDOWN`, and so does every later call.
    pub fn halt(&self) -> io::Result<()> {
        // Devices' receive threads write into the kernel's RAM, which the halt unmaps.
        for device in read(&self.net_devices).iter() {
            device.stop();
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
        netlink::add_route(destination, prefix_len, gateway, dev)
    }

    /// The main routing table for IPv4 or IPv6 (an RTM_GETROUTE dump).
    pub fn routes(&self, ipv6: bool) -> io::Result<Vec<Route>> {
        netlink::routes(ipv6)
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

/// The device list for reading; a panic elsewhere does not hide the devices.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}
