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
    BootConfig, BootError, FwmarkRule, Kernel, Link, NetDeviceConfig, NetDeviceError,
    NetDeviceStats, NetfilterReply, RemoveNetDeviceError, Route, UnknownNetDevice,
};
use packet_ring::GuestOffloads;
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
    /// The transmit offloads the kernel may use on an interface (`ethtool -K tx, tso`):
    /// what the device's far side (a guest) can take.
    fn set_tx_offloads(&self, ifname: &str, offloads: GuestOffloads) -> Result<(), StackError>;
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
    /// Adds a route to routing table `table` (a tenant VRF's).
    fn add_route_in_table(
        &self,
        table: u32,
        destination: IpAddr,
        prefix_len: u8,
        gateway: Option<IpAddr>,
        dev: Option<&str>,
    ) -> Result<(), StackError>;
    /// The main routing table of one family.
    fn routes(&self, ipv6: bool) -> Result<Vec<Route>, StackError>;
    /// Routing table `table` of one family.
    fn routes_in_table(&self, ipv6: bool, table: u32) -> Result<Vec<Route>, StackError>;
    /// Creates VRF device `name` (up) for routing table `table`.
    fn add_vrf(&self, name: &str, table: u32) -> Result<(), StackError>;
    /// Enslaves `ifname` to VRF `master`, or frees it (`None`).
    fn set_link_master(&self, ifname: &str, master: Option<&str>) -> Result<(), StackError>;
    /// Deletes a virtual interface (a VRF).
    fn delete_link(&self, ifname: &str) -> Result<(), StackError>;
    /// Adds a policy routing rule: packets with its firewall mark look up its table.
    fn add_fwmark_rule(&self, rule: &FwmarkRule) -> Result<(), StackError>;
    /// Deletes a rule added by `add_fwmark_rule`.
    fn delete_fwmark_rule(&self, rule: &FwmarkRule) -> Result<(), StackError>;
    fn set_link_mtu(&self, ifname: &str, mtu: u32) -> Result<(), StackError>;
    /// One NETLINK_NETFILTER exchange (an nf_tables batch waiting for `acks`
    /// acknowledgements, or a dump when `acks` is 0); `op` names it in errors.
    fn netfilter(
        &self,
        op: &str,
        messages: &[u8],
        acks: usize,
    ) -> Result<Vec<NetfilterReply>, StackError>;
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

    fn set_tx_offloads(&self, ifname: &str, offloads: GuestOffloads) -> Result<(), StackError> {
        self.kernel
            .set_tx_offloads(ifname, offloads)
            .map_err(kernel_err(format!("setting {ifname}'s transmit offloads")))
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

    fn add_route_in_table(
        &self,
        table: u32,
        destination: IpAddr,
        prefix_len: u8,
        gateway: Option<IpAddr>,
        dev: Option<&str>,
    ) -> Result<(), StackError> {
        self.kernel
            .add_route_in_table(table, destination, prefix_len, gateway, dev)
            .map_err(kernel_err(format!(
                "adding the route to {destination}/{prefix_len} in table {table}"
            )))
    }

    fn routes_in_table(&self, ipv6: bool, table: u32) -> Result<Vec<Route>, StackError> {
        self.kernel
            .routes_in_table(ipv6, table)
            .map_err(kernel_err(format!("listing routes of table {table}")))
    }

    fn add_vrf(&self, name: &str, table: u32) -> Result<(), StackError> {
        self.kernel
            .add_vrf(name, table)
            .map_err(kernel_err(format!("creating VRF {name} (table {table})")))
    }

    fn set_link_master(&self, ifname: &str, master: Option<&str>) -> Result<(), StackError> {
        self.kernel
            .set_link_master(ifname, master)
            .map_err(kernel_err(match master {
                Some(m) => format!("enslaving {ifname} to {m}"),
                None => format!("freeing {ifname} from its VRF"),
            }))
    }

    fn delete_link(&self, ifname: &str) -> Result<(), StackError> {
        self.kernel
            .delete_link(ifname)
            .map_err(kernel_err(format!("deleting {ifname}")))
    }

    fn add_fwmark_rule(&self, rule: &FwmarkRule) -> Result<(), StackError> {
        self.kernel
            .add_fwmark_rule(rule)
            .map_err(kernel_err(format!(
                "adding the rule fwmark {:#x} lookup {}",
                rule.mark, rule.table
            )))
    }

    fn delete_fwmark_rule(&self, rule: &FwmarkRule) -> Result<(), StackError> {
        self.kernel
            .delete_fwmark_rule(rule)
            .map_err(kernel_err(format!(
                "deleting the rule fwmark {:#x} lookup {}",
                rule.mark, rule.table
            )))
    }

    fn netfilter(
        &self,
        op: &str,
        messages: &[u8],
        acks: usize,
    ) -> Result<Vec<NetfilterReply>, StackError> {
        self.kernel
            .netfilter(messages, acks)
            .map_err(kernel_err(op))
    }

    fn set_link_mtu(&self, ifname: &str, mtu: u32) -> Result<(), StackError> {
        self.kernel
            .set_link_mtu(ifname, mtu)
            .map_err(kernel_err(format!("setting the MTU of {ifname} to {mtu}")))
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
