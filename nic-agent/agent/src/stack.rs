//! The agent's one way into a library kernel: [`StackInstance`].
//!
//! Everything the agent asks of its kernel (boot, devices, links, addresses, routes, sysctls,
//! counters) goes through this trait, so that the agent can later address several kernels
//! (one process each, since a kernel is per process) sharing its ports: a kernel in another
//! process becomes another implementation of the same trait. [`LocalStack`] is the one in
//! this process.

use std::io;
use std::net::IpAddr;

use lkl_netstack::{
    BootConfig, BootError, Kernel, Link, NetDeviceConfig, NetDeviceError, NetDeviceStats,
    RemoveNetDeviceError, Route, UnknownNetDevice,
};
use thiserror::Error;

/// A library network device, as the stack knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceHandle {
    /// The device's index in its kernel (for counters and link state).
    pub index: usize,
    /// The interface name the kernel gave it (`eth0`, ...).
    pub ifname: String,
}

/// Why a request to the stack failed.
#[derive(Debug, Error)]
pub enum StackError {
    #[error("booting the library kernel failed")]
    Boot(#[source] BootError),
    #[error("adding a network device to the library kernel failed")]
    AddDevice(#[source] NetDeviceError),
    #[error("removing network device {ifname} from the library kernel failed")]
    RemoveDevice {
        ifname: String,
        #[source]
        source: RemoveNetDeviceError,
    },
    #[error(transparent)]
    UnknownDevice(#[from] UnknownNetDevice),
    #[error("{op} failed inside the library kernel")]
    Kernel {
        op: String,
        #[source]
        source: io::Error,
    },
}

fn kernel_err(op: impl Into<String>) -> impl FnOnce(io::Error) -> StackError {
    let op = op.into();
    move |source| StackError::Kernel { op, source }
}

/// A library kernel the agent configures.
pub trait StackInstance: std::fmt::Debug {
    /// Adds a network device whose backend is `config.backend`; returns its handle once the
    /// kernel's driver has probed it.
    fn add_device(&self, config: &NetDeviceConfig) -> Result<DeviceHandle, StackError>;
    /// Removes a device added before (its driver unbinds, its queues stop).
    fn remove_device(&self, device: &DeviceHandle) -> Result<(), StackError>;
    /// Sets the link state the device reports to its driver (carrier on or off).
    fn set_device_link(&self, device: &DeviceHandle, up: bool) -> Result<(), StackError>;
    /// The device's counters and negotiated state.
    fn device_stats(&self, device: &DeviceHandle) -> Result<NetDeviceStats, StackError>;
    /// Enables `pairs` queue pairs on a multi-queue interface (`ethtool -L combined`).
    fn set_queue_pairs(&self, ifname: &str, pairs: u32) -> Result<(), StackError>;
    /// The kernel's interfaces.
    fn links(&self) -> Result<Vec<Link>, StackError>;
    fn set_link_up(&self, ifname: &str, up: bool) -> Result<(), StackError>;
    fn add_address(&self, ifname: &str, addr: IpAddr, prefix_len: u8) -> Result<(), StackError>;
    fn add_route(
        &self,
        destination: IpAddr,
        prefix_len: u8,
        gateway: Option<IpAddr>,
        dev: Option<&str>,
    ) -> Result<(), StackError>;
    /// The main routing table of one family.
    fn routes(&self, ipv6: bool) -> Result<Vec<Route>, StackError>;
    fn sysctl(&self, name: &str) -> Result<String, StackError>;
    fn set_sysctl(&self, name: &str, value: &str) -> Result<(), StackError>;
    /// Stops the kernel; nothing works afterwards.
    fn halt(&self) -> Result<(), StackError>;
    /// The kernel, when it runs in this process (services open its sockets).
    fn local_kernel(&self) -> Option<&Kernel> {
        None
    }
}

/// The library kernel of this process.
#[derive(Debug)]
pub struct LocalStack {
    kernel: Kernel,
}

impl LocalStack {
    /// Boots this process's kernel with `memory_bytes` of RAM and no device yet.
    pub fn boot(memory_bytes: u64) -> Result<LocalStack, StackError> {
        let config = BootConfig {
            memory_bytes,
            cmdline: "loglevel=4".into(),
            ..BootConfig::default()
        };
        let kernel = Kernel::boot(&config).map_err(StackError::Boot)?;
        Ok(LocalStack { kernel })
    }

    /// The kernel itself, for what the trait does not cover yet (tests, benchmarks).
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }
}

impl StackInstance for LocalStack {
    fn add_device(&self, config: &NetDeviceConfig) -> Result<DeviceHandle, StackError> {
        let (index, ifname) = self
            .kernel
            .add_net_device(config)
            .map_err(StackError::AddDevice)?;
        Ok(DeviceHandle { index, ifname })
    }

    fn remove_device(&self, device: &DeviceHandle) -> Result<(), StackError> {
        self.kernel
            .remove_net_device(device.index)
            .map_err(|source| StackError::RemoveDevice {
                ifname: device.ifname.clone(),
                source,
            })
    }

    fn set_device_link(&self, device: &DeviceHandle, up: bool) -> Result<(), StackError> {
        Ok(self.kernel.set_net_device_link(device.index, up)?)
    }

    fn device_stats(&self, device: &DeviceHandle) -> Result<NetDeviceStats, StackError> {
        Ok(self.kernel.net_device_stats(device.index)?)
    }

    fn set_queue_pairs(&self, ifname: &str, pairs: u32) -> Result<(), StackError> {
        self.kernel
            .set_queue_pairs(ifname, pairs)
            .map_err(kernel_err(format!(
                "enabling {pairs} queue pairs on {ifname}"
            )))
    }

    fn links(&self) -> Result<Vec<Link>, StackError> {
        self.kernel
            .links()
            .map_err(kernel_err("listing interfaces"))
    }

    fn set_link_up(&self, ifname: &str, up: bool) -> Result<(), StackError> {
        self.kernel
            .set_link_up(ifname, up)
            .map_err(kernel_err(format!("setting {ifname} up={up}")))
    }

    fn add_address(&self, ifname: &str, addr: IpAddr, prefix_len: u8) -> Result<(), StackError> {
        self.kernel
            .add_address(ifname, addr, prefix_len)
            .map_err(kernel_err(format!(
                "adding {addr}/{prefix_len} to {ifname}"
            )))
    }

    fn add_route(
        &self,
        destination: IpAddr,
        prefix_len: u8,
        gateway: Option<IpAddr>,
        dev: Option<&str>,
    ) -> Result<(), StackError> {
        self.kernel
            .add_route(destination, prefix_len, gateway, dev)
            .map_err(kernel_err(format!(
                "adding the route to {destination}/{prefix_len}"
            )))
    }

    fn routes(&self, ipv6: bool) -> Result<Vec<Route>, StackError> {
        self.kernel
            .routes(ipv6)
            .map_err(kernel_err("listing routes"))
    }

    fn sysctl(&self, name: &str) -> Result<String, StackError> {
        self.kernel
            .sysctl(name)
            .map_err(kernel_err(format!("reading sysctl {name}")))
    }

    fn set_sysctl(&self, name: &str, value: &str) -> Result<(), StackError> {
        self.kernel
            .set_sysctl(name, value)
            .map_err(kernel_err(format!("setting sysctl {name}={value}")))
    }

    fn halt(&self) -> Result<(), StackError> {
        self.kernel.halt().map_err(kernel_err("halting the kernel"))
    }

    fn local_kernel(&self) -> Option<&Kernel> {
        Some(&self.kernel)
    }
}
